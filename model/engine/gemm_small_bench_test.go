//go:build unix

package engine

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
)

// BenchmarkSgemmDecodeRows times a decoding step's products (R rows
// against a packed weight: the MLP's 1536×576) on one thread, with the
// 8- and 4-row kernels ("small") and without them ("rows": the rows short
// of a tile on the row kernels, as before those kernels), alternating in
// one run. It reports the thread's CPU time per product (steadier than
// wall time on a shared machine).
//
//	go test ./model/engine -run '^$' -bench SgemmDecodeRows
func BenchmarkSgemmDecodeRows(b *testing.B) {
	const n, k = 1536, 576
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	packed := packWeight(w, n, k)
	a := make([]float32, 16*k)
	for i := range a {
		a[i] = float32(r.NormFloat64())
	}
	c := make([]float32, 16*n)
	saved := gemmKernel
	defer func() { gemmKernel = saved }()
	small := saved
	rows := saved
	rows.fn8, rows.fn4 = nil, nil
	for _, m := range []int{1, 2, 3, 4, 8, 12, 13, 15, 16} {
		for _, v := range []struct {
			name string
			k    gemmMicro
		}{{"rows", rows}, {"small", small}} {
			b.Run(fmt.Sprintf("m=%d/%s", m, v.name), func(b *testing.B) {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				gemmKernel = v.k
				t0 := threadCPU()
				for i := 0; i < b.N; i++ {
					sgemmPacked(blas.NoTrans, m, n, k, 1, a, k, packed, 0, c, n)
				}
				b.ReportMetric(float64((threadCPU()-t0).Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}

// threadCPU is the calling thread's CPU time.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
