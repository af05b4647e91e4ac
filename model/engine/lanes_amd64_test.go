//go:build amd64 && !purego

package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// specials are values the lane twins must treat as the assembly does.
var specials = []float32{0, float32(math.Copysign(0, -1)), 1, -1, float32(math.Inf(1)), float32(math.Inf(-1)),
	float32(math.NaN()), 0x1p-140, -0x1p-130, 88.5, -88, 89, -87.5, 200, -200, math.MaxFloat32}

// laneInputs returns k vectors of n values: mostly ordinary ones, with
// specials sprinkled in when withSpecials.
func laneInputs(r *rand.Rand, k, n int, scale float64, withSpecials bool) [][]float32 {
	out := make([][]float32, k)
	for i := range out {
		out[i] = make([]float32, n)
		for j := range out[i] {
			out[i][j] = float32(r.NormFloat64() * scale)
			if withSpecials && r.IntN(10) == 0 {
				out[i][j] = specials[r.IntN(len(specials))]
			}
		}
	}
	return out
}

func sameBits32(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] != got[i] && want[i] != want[i]) {
			t.Fatalf("%s[%d]: Go twin %g (%#x), assembly %g (%#x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

func sameF64(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Float64bits(got) != math.Float64bits(want) && !(got != got && want != want) {
		t.Fatalf("%s: Go twin %g, assembly %g", what, got, want)
	}
}

// TestLanesMatchAssembly runs every assembly loop and its pure-Go twin
// (lanes.go) on the same inputs, ordinary and special (NaN, ±Inf, ±0,
// subnormals, exp's range edges), and requires the same bits.
func TestLanesMatchAssembly(t *testing.T) {
	if bestISA() == isaGeneric {
		t.Skip("no assembly in this build or on this CPU: nothing to compare the Go twins with")
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{8, 16, 40, 256} {
		for _, sp := range []bool{false, true} {
			for _, scale := range []float64{1, 30} {
				in := laneInputs(r, 5, n, scale, sp)
				a, b, c, d, e := in[0], in[1], in[2], in[3], in[4]
				p := func(x []float32) *float32 { return &x[0] }
				cp := func(x []float32) []float32 { return append([]float32(nil), x...) }

				sameF64(t, "max", float64(maxLanes(a)), float64(maxAVX2(p(a), n)))
				x1, x2 := cp(a), cp(a)
				scaleLanes(x1, 0.37)
				scaleAVX2(p(x2), n, 0.37)
				sameBits32(t, "scale", x1, x2)
				y1, y2 := make([]float32, n), make([]float32, n)
				mulScaleLanes(y1, a, b, 1.3)
				mulScaleAVX2(p(y2), p(a), p(b), n, 1.3)
				sameBits32(t, "mulScale", y1, y2)
				sameF64(t, "dotF64", dotF64Lanes(a, b), dotF64AVX2(p(a), p(b), n))
				sameF64(t, "dot3F64", dot3F64Lanes(a, b, c), dot3F64AVX2(p(a), p(b), p(c), n))
				x1, x2 = cp(d), cp(d)
				rmsBackRowLanes(x1, a, b, c, 0.8, -1.7)
				rmsBackRowAVX2(p(x2), p(a), p(b), p(c), n, 0.8, -1.7)
				sameBits32(t, "rmsBackRow", x1, x2)
				x1, x2 = cp(b), cp(b)
				softmaxBackRowLanes(x1, a, x1, 0.45)
				softmaxBackRowAVX2(p(x2), p(a), p(x2), n, 0.45)
				sameBits32(t, "softmaxBackRow", x1, x2)
				sameF64(t, "dot", float64(dotLanes(a, b)), float64(dotAVX2(p(a), p(b), n)))
				x1, x2 = cp(c), cp(c)
				axpyLanes(x1, a, 0.7)
				axpyAVX2(p(x2), p(a), n, 0.7)
				sameBits32(t, "axpy", x1, x2)
				y1, y2 = make([]float32, n), make([]float32, n)
				sameF64(t, "expSum", expSumLanes(y1, a, 0.25), expSumAVX2(p(y2), p(a), n, 0.25))
				sameBits32(t, "exp", y1, y2)
				y1, y2 = make([]float32, n), make([]float32, n)
				swigluLanes(y1, a, b)
				swigluAVX2(p(y2), p(a), p(b), n)
				sameBits32(t, "swiglu", y1, y2)
				g1, g2, u1, u2 := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
				swigluBackLanes(g1, u1, e, a, b)
				swigluBackAVX2(p(g2), p(u2), p(e), p(a), p(b), n)
				sameBits32(t, "swigluBack dg", g1, g2)
				sameBits32(t, "swigluBack du", u1, u2)

				// The GEMM kernels: a k×16 panel, an h×k panel of A.
				k := n + 3
				bp := laneInputs(r, 1, k*gemmNR, scale, sp)[0]
				ap := laneInputs(r, 1, gemmMR*k, 1, sp)[0]
				for _, add := range []bool{false, true} {
					c0 := laneInputs(r, 1, gemmMR*gemmNR, 1, false)[0]
					var ref []float32
					for _, km := range gemmKernels() {
						cc := cp(c0)
						km.fn(k, &ap[0], 4, 4*gemmMR, &bp[0], &cc[0], gemmNR, 1.5, add)
						if ref == nil {
							ref = cc[:6*gemmNR] // the rows every kernel computes
							continue
						}
						sameBits32(t, "kernel", cc[:6*gemmNR], ref)
					}
					// The kernels of 8 and 4 rows beside the Go kernel of
					// their height.
					for _, km := range gemmKernels() {
						for _, sk := range []struct {
							h  int
							fn gemmKernelFn
						}{{8, km.fn8}, {4, km.fn4}} {
							if sk.fn == nil {
								continue
							}
							c1, c2 := cp(c0), cp(c0)
							sk.fn(k, &ap[0], 4, 4*gemmMR, &bp[0], &c1[0], gemmNR, 1.5, add)
							sgemmKernelGo(sk.h)(k, &ap[0], 4, 4*gemmMR, &bp[0], &c2[0], gemmNR, 1.5, add)
							sameBits32(t, fmt.Sprintf("%d-row kernel of the %d-row set", sk.h, km.mr), c1, c2)
							sameBits32(t, fmt.Sprintf("%d-row kernel of the %d-row set against the 6-row kernel", sk.h, km.mr), c1[:min(sk.h, 6)*gemmNR], ref[:min(sk.h, 6)*gemmNR])
						}
					}
					r1, r2 := cp(c0[:64]), cp(c0[:64])
					bq := laneInputs(r, 1, 4*k*gemmNR, scale, sp)[0]
					sgemmRow64Go(k, &ap[0], 4*gemmMR, &bq[0], 4*k*gemmNR, &r1[0], 1.5, add)
					sgemmRow64(k, &ap[0], 4*gemmMR, &bq[0], 4*k*gemmNR, &r2[0], 1.5, add)
					sameBits32(t, "row64", r1, r2)
					sgemmRow16Go(k, &ap[1], 4*gemmMR, &bq[0], &r1[0], -0.5, add)
					sgemmRow16(k, &ap[1], 4*gemmMR, &bq[0], &r2[0], -0.5, add)
					sameBits32(t, "row16", r1[:16], r2[:16])
					// ... and the Go kernel with the 6-row tile (rows ri apart).
					ck := cp(c0)
					sgemmKernelGo(6)(k, &ap[0], 4, 4*gemmMR, &bp[0], &ck[0], gemmNR, 1.5, add)
					sameBits32(t, "go kernel", ck[:6*gemmNR], ref)
				}
			}
		}
	}
	// A hardware FMA (axpyAVX2) beside fma32, on the hard cases.
	for range 20000 {
		c := float32(1 + r.Float64())
		a := float32(1 + r.Float64())
		bs := make([]float32, 8)
		ys := make([]float32, 8)
		for l := range bs {
			b := float32(float64(c) * 0x1p-24 / float64(a))
			bs[l] = math.Float32frombits(uint32(int(math.Float32bits(b)) + l%3 - 1))
			ys[l] = c
		}
		want := append([]float32(nil), ys...)
		axpyAVX2(&want[0], &bs[0], 8, a)
		for l := range bs {
			if got := fma32(a, bs[l], c); math.Float32bits(got) != math.Float32bits(want[l]) {
				t.Fatalf("fma32(%x, %x, %x) = %x, the CPU's FMA %x", a, bs[l], c, got, want[l])
			}
		}
	}
}
