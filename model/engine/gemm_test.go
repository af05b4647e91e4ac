package engine

import (
	"math"
	"math/rand/v2"
	"slices"
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

// TestSgemmRowsAnyTiling: every row of a product gives the same bits
// whatever the number of rows beside it, so whichever tiles cover it (a
// whole tile, the 8- and 4-row kernels, a zero-padded tile or the row
// kernels), on every instruction set: each row of C for M = 1 … 40 (every
// remainder of a 12-row and a 6-row tile, and two blocks of rows) equals,
// bit for bit, the chains of fused multiply-adds that define it (fma32 over
// each block of k from zero, then into C), with B packed (a decoder's
// weight), as bfloat16 standing for a packed weight, and plain (transposed
// and not), beta 0 and 1.
func TestSgemmRowsAnyTiling(t *testing.T) {
	const n, k = 40, 300 // an edge panel of 8 columns, two blocks of k
	rng := rand.New(rand.NewPCG(3, 4))
	w := make([]float32, n*k) // [n, k]: op(B) = wᵀ
	wb := make([]uint16, n*k)
	for i := range w {
		wb[i] = uint16(math.Float32bits(float32(rng.NormFloat64())) >> 16)
		w[i] = bf16f(wb[i])
	}
	wt := make([]float32, k*n) // w transposed: op(B) = wt
	for j := 0; j < n; j++ {
		for p := 0; p < k; p++ {
			wt[p*n+j] = w[j*k+p]
		}
	}
	packed := packWeight(w, n, k)
	const maxM = 2*gemmMC + 13
	a := make([]float32, maxM*k)
	for i := range a {
		a[i] = float32(rng.NormFloat64())
	}
	c0 := make([]float32, maxM*n)
	for i := range c0 {
		c0[i] = float32(rng.NormFloat64())
	}
	const alpha = 0.75
	want := func(beta float32) []float32 {
		out := make([]float32, maxM*n)
		for i := 0; i < maxM; i++ {
			for j := 0; j < n; j++ {
				cv := c0[i*n+j] * beta
				for pc := 0; pc < k; pc += gemmKC {
					var acc float32
					for p := pc; p < min(pc+gemmKC, k); p++ {
						acc = fma32(a[i*k+p], w[j*k+p], acc)
					}
					if beta == 0 && pc == 0 {
						cv = acc * alpha
					} else {
						cv = fma32(acc, alpha, cv)
					}
				}
				out[i*n+j] = cv
			}
		}
		return out
	}
	saved := gemmKernel
	defer func() { gemmKernel = saved }()
	for _, km := range gemmKernels() {
		gemmKernel = km
		for _, beta := range []float32{0, 1} {
			ref := want(beta)
			for _, m := range append([]int{maxM, gemmMC + 1}, rangeInts(1, 41)...) {
				for _, path := range []string{"packed", "bf16", "trans", "plain"} {
					c := slices.Clone(c0[:m*n])
					switch path {
					case "packed":
						sgemmPacked(blas.NoTrans, m, n, k, alpha, a, k, packed, beta, c, n)
					case "bf16":
						sgemmBF16(blas.NoTrans, blas.Trans, m, n, k, alpha, a, k, bf16B{b: wb, rowKern: true}, k, beta, c, n)
					case "trans":
						sgemmVec(blas.NoTrans, blas.Trans, m, n, k, alpha, a, k, w, k, beta, c, n)
					case "plain":
						sgemmVec(blas.NoTrans, blas.NoTrans, m, n, k, alpha, a, k, wt, n, beta, c, n)
					}
					for e, v := range c {
						if math.Float32bits(v) != math.Float32bits(ref[e]) {
							t.Fatalf("%d-row kernel, %s B, M=%d, beta %g: C[%d][%d] = %g, want %g", km.mr, path, m, beta, e/n, e%n, v, ref[e])
						}
					}
				}
			}
		}
	}
}

func rangeInts(lo, hi int) []int {
	var s []int
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}
