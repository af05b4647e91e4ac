//go:build openblas

package engine

import (
	"sync"

	"github.com/fedtune/fedtune/model/engine/internal/openblas"
)

// With the openblas build tag, package model installs OpenBLAS as gonum's
// blas32 implementation (model/blas_openblas.go). OpenBLAS's own threads
// busy-wait between calls and compete for the cores with the Host's worker
// pool, which runs every other operation of the step, so the Host makes
// OpenBLAS single-threaded (process-wide, when the first Host is made) and
// splits large products over its own pool instead.
func init() {
	hostBLAS = hostBLASSetup{serial: true, setup: func() {
		openblasOnce.Do(func() { openblas.SetThreads(1) })
	}}
}

var openblasOnce sync.Once
