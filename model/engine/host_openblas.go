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
// OpenBLAS single-threaded (process-wide, when the first Host is made: a
// Gorgonia trainer in the same process then runs its products on one
// thread too) and splits large products over its own pool instead.
//
// An OpenMP build of OpenBLAS keeps the thread count per calling thread,
// so the pool's workers would each start a full team of threads: with one,
// the Host leaves OpenBLAS alone and uses its own sgemm (or gonum's).
func init() {
	if openblas.Parallel() == openblas.OpenMP {
		return
	}
	hostBLAS = hostBLASSetup{serial: true, setup: func() {
		openblasOnce.Do(func() { openblas.SetThreads(1) })
	}}
}

var openblasOnce sync.Once
