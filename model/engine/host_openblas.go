//go:build openblas

package engine

import (
	"sync"

	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/netlib/blas/netlib"

	"github.com/fedtune/fedtune/model/engine/internal/openblas"
)

// With the openblas build tag, the engine installs OpenBLAS (cgo,
// gonum.org/v1/netlib) as gonum's blas32 implementation, which the Host's
// products then call (model/gorgoniaref does the same for Gorgonia's).
// Build with Debian's libopenblas-dev installed and CGO_LDFLAGS=-lopenblas.
// OpenBLAS's own threads
// busy-wait between calls and compete for the cores with the Host's worker
// pool, which runs every other operation of the step, so the Host makes
// OpenBLAS single-threaded (process-wide, when the first Host is made: a
// Gorgonia trainer in the same process then runs its products on one
// thread too) and splits large products over its own pool instead.
//
// An OpenMP build of OpenBLAS keeps the thread count per calling thread,
// so the pool's workers would each start a full team of threads: with one,
// the Host leaves OpenBLAS alone and uses its own sgemm (or gonum's).
func init() {
	blas32.Use(netlib.Implementation{})
	if openblas.Parallel() == openblas.OpenMP {
		return
	}
	hostBLAS = hostBLASSetup{serial: true, setup: func() {
		openblasOnce.Do(func() { openblas.SetThreads(1) })
	}}
}

var openblasOnce sync.Once
