package engine

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
)

// TestPackWeight: a MatMul whose B a Host has packed (PackWeight) gives
// bit for bit the product without packing, over shapes with edge panels,
// several blocks of k and of n, one row and many, split over the pool by
// rows and by columns; and a Write to the weight drops the packed copy.
func TestPackWeight(t *testing.T) {
	for _, k := range gemmKernels() { // the pure-Go kernel too
		saved := gemmKernel
		gemmKernel = k
		for _, sh := range [][3]int{{1, 37, 5}, {1, 49152 / 16, 576}, {3, 1100, 300}, {16, 576, 1536}, {13, 2000, 64}, {200, 40, 513}, {40, 3000, 70}} {
			m, n, kk := sh[0], sh[1], sh[2]
			r := rand.New(rand.NewPCG(uint64(m), uint64(n*kk)))
			x, w := make([]float32, m*kk), make([]float32, n*kk)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			for i := range w {
				w[i] = float32(r.NormFloat64())
			}
			h := NewHost().(*host)
			xb, wb := h.Alloc(len(x)), h.Alloc(len(w))
			h.Write(xb, 0, x)
			h.Write(wb, 0, w)
			run := func(beta float32) []float32 {
				c, init := h.Alloc(m*n), make([]float32, m*n)
				for i := range init {
					init[i] = float32(i%3) - 1
				}
				h.Write(c, 0, init)
				h.MatMul(Gemm{TransB: true, M: m, N: n, K: kk, Alpha: 0.75, Beta: beta, A: xb, B: wb, C: c})
				out := make([]float32, m*n)
				h.Read(out, c, 0)
				return out
			}
			for _, beta := range []float32{0, 1} {
				want := run(beta)
				h.PackWeight(wb, n, kk)
				if wb.(*hostBuf).packed == nil {
					t.Fatal("PackWeight kept no packed copy")
				}
				got := run(beta)
				if err := h.Sync(); err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("kernel %d rows, %d×%d×%d beta %g: element %d = %g packed, %g not", k.mr, m, n, kk, beta, i, got[i], want[i])
					}
				}
				h.Write(wb, 0, w[:1])
				if wb.(*hostBuf).packed != nil {
					t.Fatal("a Write kept the packed copy")
				}
			}
		}
		gemmKernel = saved
	}
}

// TestMatMulSplitSameBits: a product MatMul splits over the cores by rows
// (blocks of splitRowUnit rows, even shares) or by columns gives, bit for
// bit, the product on one core, whatever the number of parts (the rows of
// a prefill step beside decoding rows: 136, 143, 144).
func TestMatMulSplitSameBits(t *testing.T) {
	const n, k = 40, 300
	r := rand.New(rand.NewPCG(9, 10))
	for _, m := range []int{136, 143, 144, 201} {
		x, w := make([]float32, m*k), make([]float32, n*k)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		for i := range w {
			w[i] = float32(r.NormFloat64())
		}
		packed := packWeight(w, n, k)
		want := make([]float32, m*n)
		sgemmPacked(blas.NoTrans, m, n, k, 1, x, k, packed, 0, want, n)
		for _, procs := range []int{2, 3, 5} {
			h := NewHost().(*host)
			h.procs = procs
			xb, wb, cb := h.Alloc(len(x)), h.Alloc(len(w)), h.Alloc(m*n)
			h.Write(xb, 0, x)
			h.Write(wb, 0, w)
			h.PackWeight(wb, n, k)
			h.MatMul(Gemm{TransB: true, M: m, N: n, K: k, Alpha: 1, A: xb, B: wb, C: cb})
			got := make([]float32, m*n)
			h.Read(got, cb, 0)
			if err := h.Sync(); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("M=%d over %d parts: C[%d][%d] = %g, one core %g", m, procs, i/n, i%n, got[i], want[i])
				}
			}
		}
	}
}
