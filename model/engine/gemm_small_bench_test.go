//go:build unix

package engine

import (
	"fmt"
	"math"
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

// BenchmarkSgemmFusedQKV times a decoding step's Q, K and V projections
// at the SmolLM2-135M shape (16 rows, d 576, 576 + 192 + 192 outputs) on
// one thread as three products ("separate", what the Decoder runs) and as
// one product over the three weights stacked ("fused": each output column
// is the same dot product, so the same bits), alternating in one run: what
// reading the input once and calling once would save, before the costs of
// splitting its output for RoPE and the cache.
func BenchmarkSgemmFusedQKV(b *testing.B) {
	const m, d, nq, nkv = 16, 576, 576, 192
	r := rand.New(rand.NewPCG(3, 4))
	w := make([]float32, (nq+2*nkv)*d)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	a := make([]float32, m*d)
	for i := range a {
		a[i] = float32(r.NormFloat64())
	}
	wq, wk, wv := packWeight(w[:nq*d], nq, d), packWeight(w[nq*d:(nq+nkv)*d], nkv, d), packWeight(w[(nq+nkv)*d:], nkv, d)
	fused := packWeight(w, nq+2*nkv, d)
	q, k, v, qkv := make([]float32, m*nq), make([]float32, m*nkv), make([]float32, m*nkv), make([]float32, m*(nq+2*nkv))
	for round := 0; round < 3; round++ {
		b.Run("separate", func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t0 := threadCPU()
			for i := 0; i < b.N; i++ {
				sgemmPacked(blas.NoTrans, m, nq, d, 1, a, d, wq, 0, q, nq)
				sgemmPacked(blas.NoTrans, m, nkv, d, 1, a, d, wk, 0, k, nkv)
				sgemmPacked(blas.NoTrans, m, nkv, d, 1, a, d, wv, 0, v, nkv)
			}
			b.ReportMetric(float64((threadCPU()-t0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
		b.Run("fused", func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t0 := threadCPU()
			for i := 0; i < b.N; i++ {
				sgemmPacked(blas.NoTrans, m, nq+2*nkv, d, 1, a, d, fused, 0, qkv, nq+2*nkv)
			}
			b.ReportMetric(float64((threadCPU()-t0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
	for i := 0; i < m; i++ { // the same bits, column for column
		for j := 0; j < nq+2*nkv; j++ {
			var want float32
			switch {
			case j < nq:
				want = q[i*nq+j]
			case j < nq+nkv:
				want = k[i*nkv+j-nq]
			default:
				want = v[i*nkv+j-nq-nkv]
			}
			if got := qkv[i*(nq+2*nkv)+j]; math.Float32bits(got) != math.Float32bits(want) {
				b.Fatalf("row %d column %d: fused %g, separate %g", i, j, got, want)
			}
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
