package engine

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
)

// TestSgemmVec compares sgemmVec with a float64 triple loop over shapes
// that cover edge tiles and several blocks in every dimension, all four
// transpose combinations, padded row strides, and beta 0 (C holding NaN),
// 1 and other values.
func TestSgemmVec(t *testing.T) {
	for _, k := range gemmKernels() { // the pure-Go kernel too
		saved := gemmKernel
		gemmKernel = k
		testSgemmVec(t)
		gemmKernel = saved
		t.Logf("%d-row kernel: ok", k.mr)
	}
}

func testSgemmVec(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sh := range [][3]int{{1, 1, 1}, {6, 16, 1}, {7, 17, 3}, {13, 40, 300}, {100, 33, 257}, {200, 1030, 20}, {5, 8, 600}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
			for _, tB := range []blas.Transpose{blas.NoTrans, blas.Trans} {
				for _, beta := range []float32{0, 1, -0.5} {
					ar, ac := m, k
					if tA == blas.Trans {
						ar, ac = k, m
					}
					br, bc := k, n
					if tB == blas.Trans {
						br, bc = n, k
					}
					lda, ldb, ldc := ac+3, bc+1, n+2
					a, b, c := make([]float32, ar*lda), make([]float32, br*ldb), make([]float32, m*ldc)
					for _, x := range [][]float32{a, b, c} {
						for i := range x {
							x[i] = float32(rng.NormFloat64())
						}
					}
					if beta == 0 {
						for i := range c {
							c[i] = float32(math.NaN())
						}
					}
					want := make([]float64, len(c))
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							var s float64
							for p := 0; p < k; p++ {
								var av, bv float32
								if tA == blas.Trans {
									av = a[p*lda+i]
								} else {
									av = a[i*lda+p]
								}
								if tB == blas.Trans {
									bv = b[j*ldb+p]
								} else {
									bv = b[p*ldb+j]
								}
								s += float64(av) * float64(bv)
							}
							want[i*ldc+j] = 1.5 * s
							if beta != 0 {
								want[i*ldc+j] += float64(beta) * float64(c[i*ldc+j])
							}
						}
					}
					orig := append([]float32(nil), c...)
					sgemmVec(tA, tB, m, n, k, 1.5, a, lda, b, ldb, beta, c, ldc)
					for i, w := range want {
						if i%ldc >= n { // padding must not change
							if math.Float32bits(c[i]) != math.Float32bits(orig[i]) {
								t.Fatalf("m,n,k=%d,%d,%d: padding C[%d][%d] changed", m, n, k, i/ldc, i%ldc)
							}
							continue
						}
						tol := 1e-5 * math.Sqrt(float64(k)) * (1 + math.Abs(w))
						if d := math.Abs(float64(c[i]) - w); !(d <= tol) {
							t.Fatalf("m,n,k=%d,%d,%d tA=%c tB=%c beta=%g: C[%d][%d] = %g, want %g",
								m, n, k, tA, tB, beta, i/ldc, i%ldc, c[i], w)
						}
					}
				}
			}
		}
	}
}

// BenchmarkSgemmVec times one d256 MLP-sized product (1024×688×256, B
// transposed) on one goroutine.
func BenchmarkSgemmVec(b *testing.B) {
	m, n, k := 1024, 688, 256
	x, w, y := make([]float32, m*k), make([]float32, n*k), make([]float32, m*n)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	for i := range w {
		w[i] = float32(i%5) - 2
	}
	for i := 0; i < b.N; i++ {
		sgemmVec(blas.NoTrans, blas.Trans, m, n, k, 1, x, k, w, k, 0, y, n)
	}
	b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
