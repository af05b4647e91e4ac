//go:build fedcuda || fedcudaemu

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/fedtune/fedtune/kernels"
)

// testBackend returns a Backend on the shared Context whose chunks hold
// about budget bytes of input rows (small budgets force many chunks).
func testBackend(t testing.TB, budget int64) *Backend {
	t.Helper()
	b := NewBackend(testContext(t))
	b.budget = budget
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
		if b.Fallbacks() != 0 {
			t.Errorf("%d calls fell back to the CPU; last GPU error: %v", b.Fallbacks(), b.Err())
		}
	})
	return b
}

// specials are the values that make bit-exactness hard.
var specials = []float32{
	0, float32(math.Copysign(0, -1)), 1, -1,
	float32(math.Inf(1)), float32(math.Inf(-1)),
	math.Float32frombits(0x7fc00000), math.Float32frombits(0xffc00001), // ±NaN
	math.Float32frombits(0x7f800001),                          // signalling NaN
	math.Float32frombits(1), math.Float32frombits(0x807fffff), // subnormals
	math.SmallestNonzeroFloat32, math.MaxFloat32, -math.MaxFloat32,
	1e-38, 3e38, 0.5, -0.5, 1.5, 2.5, -2.5, 126.5, 127.49999,
}

// vec returns n values: mostly normal numbers of varied scale, and, when
// special is set, about one in eight from specials.
func vec(r *rand.Rand, n int, special bool) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch {
		case special && r.IntN(8) == 0:
			x[i] = specials[r.IntN(len(specials))]
		case r.IntN(16) == 0:
			x[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(60)-30)))
		default:
			x[i] = float32(r.NormFloat64())
		}
	}
	return x
}

func rows(r *rand.Rand, k, n int, special bool) [][]float32 {
	xs := make([][]float32, k)
	for i := range xs {
		xs[i] = vec(r, n, special)
	}
	return xs
}

func weights(r *rand.Rand, k int) []float64 {
	w := make([]float64, k)
	for i := range w {
		w[i] = r.Float64()*3 - 1
		if r.IntN(5) == 0 {
			w[i] = float64(r.IntN(1000) + 1)
		}
	}
	return w
}

// same32 reports whether a and b hold the same bits, any NaN matching any
// NaN (the contract leaves NaN payloads open); it names the first mismatch.
func same32(a, b []float32) (bool, string) {
	if len(a) != len(b) {
		return false, fmt.Sprintf("lengths %d and %d", len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
			return false, fmt.Sprintf("[%d]: got %v (%#08x), want %v (%#08x)", i, a[i], math.Float32bits(a[i]), b[i], math.Float32bits(b[i]))
		}
	}
	return true, ""
}

func same64(a, b []float64) (bool, string) {
	if len(a) != len(b) {
		return false, fmt.Sprintf("lengths %d and %d", len(a), len(b))
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
			return false, fmt.Sprintf("[%d]: got %v (%#016x), want %v (%#016x)", i, a[i], math.Float64bits(a[i]), b[i], math.Float64bits(b[i]))
		}
	}
	return true, ""
}

// paritySizes are vector lengths around the reduction block and the chunk
// sizes the budgets below give.
var paritySizes = []int{0, 1, 3, 4, 5, 4095, 4096, 4097, 3*4096 + 7, 8*4096 + 1, 20000}

// budgets: one row of 4096 elements per chunk (every chunk boundary is a
// block boundary), a few blocks per chunk, and the default.
var budgets = []int64{4096 * 4, 3 * 4096 * 4 * 4, defaultChunkBytes}

func TestParityWeighted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ref := kernels.Reference{}
	for _, budget := range budgets {
		be := testBackend(t, budget)
		for _, n := range paritySizes {
			for _, k := range []int{0, 1, 2, 3, 5, 16, 17, 33} {
				for _, special := range []bool{false, true} {
					name := fmt.Sprintf("budget=%d/n=%d/k=%d/special=%v", budget, n, k, special)
					xs, w := rows(r, k, n, special), weights(r, k)
					s := 1 / float64(k+1)
					if special && k%2 == 1 {
						s = math.Inf(1)
					}

					want := make([]float32, n)
					ref.WeightedMean(want, w, xs, s)
					got := make([]float32, n)
					be.WeightedMean(got, w, xs, s)
					if ok, why := same32(got, want); !ok {
						t.Fatalf("%s: WeightedMean %s", name, why)
					}
					got2 := make([]float32, n)
					kernels.WeightedMean(be, got2, w, xs, s)
					if ok, why := same32(got2, want); !ok {
						t.Fatalf("%s: kernels.WeightedMean %s", name, why)
					}

					acc0 := make([]float64, n)
					for i := range acc0 {
						acc0[i] = float64(vec(r, 1, special)[0]) * 7
					}
					accWant, accGot := slices.Clone(acc0), slices.Clone(acc0)
					ref.WeightedSum(accWant, w, xs)
					be.WeightedSum(accGot, w, xs)
					if ok, why := same64(accGot, accWant); !ok {
						t.Fatalf("%s: WeightedSum %s", name, why)
					}

					ref.Store(want, accWant, s)
					be.Store(got, accWant, s)
					if ok, why := same32(got, want); !ok {
						t.Fatalf("%s: Store %s", name, why)
					}
				}
			}
		}
	}
}

func TestParityElementwise(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	ref := kernels.Reference{}
	for _, budget := range budgets {
		be := testBackend(t, budget)
		sizes := paritySizes
		if !Emulated { // too slow for the CPU emulation
			sizes = append(sizes, 1<<20+3)
		}
		for _, n := range sizes {
			for _, special := range []bool{false, true} {
				name := fmt.Sprintf("budget=%d/n=%d/special=%v", budget, n, special)
				x := vec(r, n, special)

				for _, s := range []float32{0.5, -3, 1e-30, float32(math.Inf(1)), 0} {
					want, got := slices.Clone(x), slices.Clone(x)
					ref.Scale(want, s)
					be.Scale(got, s)
					if ok, why := same32(got, want); !ok {
						t.Fatalf("%s: Scale(%v) %s", name, s, why)
					}
				}

				gotN, wantN := be.SquaredNorm(x), ref.SquaredNorm(x)
				if ok, why := same64([]float64{gotN}, []float64{wantN}); !ok {
					t.Fatalf("%s: SquaredNorm %s", name, why)
				}

				if gotI, wantI := be.FirstNonFinite(x), ref.FirstNonFinite(x); gotI != wantI {
					t.Fatalf("%s: FirstNonFinite = %d, want %d", name, gotI, wantI)
				}

				for _, block := range []int{1, 7, 32, 64, 4096, 5000} {
					if Emulated && block < 32 && n > 4*4096 {
						// agg_qscale runs a warp per scale block, and the
						// emulation switches fibers at each shuffle: tiny
						// blocks of long vectors take seconds there. The
						// sizes kept still span several chunks.
						continue
					}
					nb := (n + block - 1) / block
					qw, qg := make([]int8, n), make([]int8, n)
					sw, sg := make([]float32, nb), make([]float32, nb)
					ref.QuantizeInt8(qw, sw, x, block)
					be.QuantizeInt8(qg, sg, x, block)
					if !slices.Equal(qg, qw) {
						i := 0
						for qg[i] == qw[i] {
							i++
						}
						t.Fatalf("%s: QuantizeInt8 block %d: q[%d] = %d, want %d (x = %v, scale %v)", name, block, i, qg[i], qw[i], x[i], sw[i/block])
					}
					if ok, why := same32(sg, sw); !ok {
						t.Fatalf("%s: QuantizeInt8 block %d: scales %s", name, block, why)
					}
					dw, dg := make([]float32, n), make([]float32, n)
					ref.DequantizeInt8(dw, qw, sw, block)
					be.DequantizeInt8(dg, qw, sw, block)
					if ok, why := same32(dg, dw); !ok {
						t.Fatalf("%s: DequantizeInt8 block %d: %s", name, block, why)
					}
				}
			}
		}
	}
}

func TestParityFirstNonFinitePositions(t *testing.T) {
	be := testBackend(t, 4096*4)
	r := rand.New(rand.NewPCG(5, 6))
	n := 5*4096 + 3
	for _, pos := range []int{0, 1, 4095, 4096, 4097, 2 * 4096, n - 1} {
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
			x := vec(r, n, false)
			x[pos] = bad
			if pos+5 < n {
				x[pos+5] = float32(math.NaN())
			}
			if got := be.FirstNonFinite(x); got != pos {
				t.Fatalf("FirstNonFinite with %v at %d = %d", bad, pos, got)
			}
		}
	}
}

func TestParityPairwise(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	ref := kernels.Reference{}
	for _, budget := range budgets {
		be := testBackend(t, budget)
		for _, n := range paritySizes {
			for _, k := range []int{0, 1, 2, 3, 7, 20} {
				for _, special := range []bool{false, true} {
					xs := rows(r, k, n, special)
					d0 := make([]float64, k*k)
					for i := range d0 {
						d0[i] = float64(r.IntN(3)) - 1 // -1, 0 or 1, and -0 below
					}
					if len(d0) > 0 {
						d0[0] = math.Copysign(0, -1)
					}
					want, got := slices.Clone(d0), slices.Clone(d0)
					ref.PairwiseSquaredDistances(want, xs)
					be.PairwiseSquaredDistances(got, xs)
					if ok, why := same64(got, want); !ok {
						t.Fatalf("budget=%d/n=%d/k=%d/special=%v: PairwiseSquaredDistances %s", budget, n, k, special, why)
					}
				}
			}
		}
	}
}

func TestParityOrderStatistics(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	ref := kernels.Reference{}
	for _, budget := range budgets {
		be := testBackend(t, budget)
		for _, n := range paritySizes {
			for _, k := range []int{1, 2, 3, 4, 5, 31, 32, 33, 40} {
				for _, special := range []bool{false, true} {
					name := fmt.Sprintf("budget=%d/n=%d/k=%d/special=%v", budget, n, k, special)
					xs := rows(r, k, n, special)
					if special && n > 0 {
						// Ties of signed zeros and of NaNs with payloads.
						for _, x := range xs {
							x[0] = specials[r.IntN(2)]
							x[n-1] = specials[6+r.IntN(3)]
						}
					}
					orig := make([][]float32, k)
					for i := range xs {
						orig[i] = slices.Clone(xs[i])
					}
					want, got := make([]float32, n), make([]float32, n)
					ref.Median(want, xs)
					be.Median(got, xs)
					if ok, why := same32(got, want); !ok {
						t.Fatalf("%s: Median %s", name, why)
					}
					for trim := 0; 2*trim < k; trim += max(1, k/5) {
						ref.TrimmedMean(want, xs, trim)
						be.TrimmedMean(got, xs, trim)
						if ok, why := same32(got, want); !ok {
							t.Fatalf("%s: TrimmedMean(%d) %s", name, trim, why)
						}
					}
					for i := range xs {
						if ok, why := same32(xs[i], orig[i]); !ok {
							t.Fatalf("%s: input %d changed: %s", name, i, why)
						}
					}
				}
			}
		}
	}
}

// TestWeightedMeanDevice checks the device-resident path against Reference
// with inputs already on the GPU.
func TestWeightedMeanDevice(t *testing.T) {
	c := testContext(t)
	be := testBackend(t, defaultChunkBytes)
	r := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{1, 5, 4096, 100003} {
		for _, k := range []int{1, 16, 19} {
			xs, w := rows(r, k, n, true), weights(r, k)
			ptrs := make([]DevicePtr, k)
			for i := range ptrs {
				ptrs[i] = deviceCopy(t, c, xs[i])
			}
			out := deviceCopy(t, c, make([]float32, n))
			if err := be.WeightedMeanDevice(out, w, ptrs, n, 0.25); err != nil {
				t.Fatal(err)
			}
			got := hostCopy(t, c, out, n)
			want := make([]float32, n)
			kernels.Reference{}.WeightedMean(want, w, xs, 0.25)
			if ok, why := same32(got, want); !ok {
				t.Fatalf("n=%d k=%d: %s", n, k, why)
			}
			for _, p := range append(ptrs, out) {
				c.Free(p)
			}
		}
	}
}

// TestBackendConcurrent calls one Backend from several goroutines at once.
func TestBackendConcurrent(t *testing.T) {
	be := testBackend(t, 4096*4*4)
	r := rand.New(rand.NewPCG(13, 14))
	xs, w := rows(r, 5, 30001, true), weights(r, 5)
	want := make([]float32, 30001)
	kernels.Reference{}.WeightedMean(want, w, xs, 0.5)
	wantN := kernels.Reference{}.SquaredNorm(xs[0])
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				got := make([]float32, len(want))
				be.WeightedMean(got, w, xs, 0.5)
				if ok, why := same32(got, want); !ok {
					errs <- fmt.Sprintf("goroutine %d: WeightedMean %s", g, why)
					return
				}
				if n := be.SquaredNorm(xs[0]); math.Float64bits(n) != math.Float64bits(wantN) && !(n != n && wantN != wantN) {
					errs <- fmt.Sprintf("goroutine %d: SquaredNorm = %v, want %v", g, n, wantN)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestBackendPanicsOnMismatch(t *testing.T) {
	be := &Backend{} // the checks run before any GPU work
	for name, f := range map[string]func(){
		"WeightedMean": func() { be.WeightedMean(make([]float32, 3), []float64{1}, [][]float32{make([]float32, 2)}, 1) },
		"WeightedSum":  func() { be.WeightedSum(make([]float64, 3), []float64{1, 2}, [][]float32{make([]float32, 3)}) },
		"Store":        func() { be.Store(make([]float32, 3), make([]float64, 2), 1) },
		"Median":       func() { be.Median(make([]float32, 3), nil) },
		"TrimmedMean":  func() { be.TrimmedMean(make([]float32, 1), [][]float32{{1}, {2}}, 1) },
		"Pairwise":     func() { be.PairwiseSquaredDistances(make([]float64, 3), [][]float32{{1}, {2}}) },
		"Quantize":     func() { be.QuantizeInt8(make([]int8, 3), make([]float32, 1), make([]float32, 3), 2) },
		"Dequantize":   func() { be.DequantizeInt8(make([]float32, 3), make([]int8, 3), make([]float32, 1), 0) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
	}
}
