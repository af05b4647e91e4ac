package kernels

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/fedtest"
)

// threadCounts are the CPU sizes every comparison runs with: results must
// not depend on them.
var threadCounts = []int{1, 2, 3, 7}

// lengths cover empty, tiny, odd, block-boundary and multi-chunk sizes.
var lengths = []int{0, 1, 7, 33, ReduceBlock - 1, ReduceBlock, ReduceBlock + 1, 3*ReduceBlock + 5, wsumChunk + 17, 9*8*ReduceBlock + 123}

func backends() []*CPU {
	var cs []*CPU
	for _, n := range threadCounts {
		cs = append(cs, NewCPU(n))
	}
	return cs
}

// randVec returns n values spread over many magnitudes and both signs, so
// that any change in the order of roundings shows in the bits.
func randVec(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * math.Pow(10, r.Float64()*6-3))
	}
	return x
}

func randVecs(r *rand.Rand, k, n int) [][]float32 {
	xs := make([][]float32, k)
	for i := range xs {
		xs[i] = randVec(r, n)
	}
	return xs
}

func sameBits64(t *testing.T, what string, got, want []float64) {
	t.Helper()
	for i := range want {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
			t.Fatalf("%s: [%d] = %v (%#x), reference %v (%#x)", what, i, got[i], math.Float64bits(got[i]), want[i], math.Float64bits(want[i]))
		}
	}
}

func sameBits32(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: len %d, reference %d", what, len(got), len(want))
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: [%d] = %v (%#x), reference %v (%#x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

func TestWeightedSumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, k := range []int{0, 1, 2, 3, 5, 16, 17} {
		for _, n := range lengths {
			t.Run(fmt.Sprintf("k=%d/n=%d", k, n), func(t *testing.T) {
				xs := randVecs(r, k, n)
				w := make([]float64, k)
				for i := range w {
					w[i] = r.Float64() * 1000
				}
				init := make([]float64, n)
				for i := range init {
					init[i] = r.NormFloat64()
				}
				want := slices.Clone(init)
				Reference{}.WeightedSum(want, w, xs)
				for _, c := range backends() {
					got := slices.Clone(init)
					c.WeightedSum(got, w, xs)
					sameBits64(t, fmt.Sprintf("threads=%d", c.Threads()), got, want)
				}
			})
		}
	}
}

func TestWeightedMeanMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, k := range []int{0, 1, 2, 5, 15, 16, 17, 33} {
		for _, n := range []int{0, 1, 31, 32, 33, 1000, wsumChunk + 47, 3*wsumChunk + 5} {
			t.Run(fmt.Sprintf("k=%d/n=%d", k, n), func(t *testing.T) {
				xs := randVecs(r, k, n)
				w := make([]float64, k)
				for i := range w {
					w[i] = float64(r.IntN(5000) + 1)
				}
				s := 1 / float64(k+7)
				want := make([]float32, n)
				Reference{}.WeightedMean(want, w, xs, s)
				// The definition, spelled out.
				acc := make([]float64, n)
				Reference{}.WeightedSum(acc, w, xs)
				def := make([]float32, n)
				Reference{}.Store(def, acc, s)
				sameBits32(t, "reference vs definition", want, def)
				for _, c := range backends() {
					got := make([]float32, n)
					c.WeightedMean(got, w, xs, s)
					sameBits32(t, fmt.Sprintf("threads=%d", c.Threads()), got, want)
					clear(got)
					WeightedMean(c, got, w, xs, s)
					sameBits32(t, "WeightedMean(cpu)", got, want)
				}
				// A backend without the fused method goes through WeightedSum and Store.
				got := make([]float32, n)
				WeightedMean(unfused{NewCPU(2)}, got, w, xs, s)
				sameBits32(t, "unfused", got, want)
			})
		}
	}
}

// unfused hides CPU's WeightedMean.
type unfused struct{ Backend }

// TestReferenceRoundsSeparately checks the oracle itself against exact
// arithmetic: each product rounded to float64, then each sum, never fused.
func TestReferenceRoundsSeparately(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n, k = 257, 5
	xs := randVecs(r, k, n)
	w := make([]float64, k)
	for i := range w {
		w[i] = r.NormFloat64() * 1e3
	}
	acc := make([]float64, n)
	for i := range acc {
		acc[i] = r.NormFloat64()
	}
	want := slices.Clone(acc)
	for i := range want {
		for j := range k {
			p := new(big.Float).SetPrec(200).Mul(big.NewFloat(w[j]), big.NewFloat(float64(xs[j][i])))
			pr, _ := p.Float64()
			s := new(big.Float).SetPrec(200).Add(big.NewFloat(want[i]), big.NewFloat(pr))
			want[i], _ = s.Float64()
		}
	}
	Reference{}.WeightedSum(acc, w, xs)
	sameBits64(t, "reference", acc, want)
}

func TestStoreScaleMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range lengths {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			acc := make([]float64, n)
			for i := range acc {
				acc[i] = r.NormFloat64() * 1e5
			}
			x := randVec(r, n)
			want := make([]float32, n)
			Reference{}.Store(want, acc, 1.0/3)
			wantX := slices.Clone(x)
			Reference{}.Scale(wantX, 0.3)
			for _, c := range backends() {
				got := make([]float32, n)
				c.Store(got, acc, 1.0/3)
				sameBits32(t, "Store", got, want)
				gotX := slices.Clone(x)
				c.Scale(gotX, 0.3)
				sameBits32(t, "Scale", gotX, wantX)
			}
		})
	}
}

func TestSquaredNormMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range lengths {
		x := randVec(r, n)
		want := Reference{}.SquaredNorm(x)
		for _, c := range backends() {
			if got := c.SquaredNorm(x); math.Float64bits(got) != math.Float64bits(want) {
				t.Errorf("n=%d threads=%d: %v, reference %v", n, c.Threads(), got, want)
			}
		}
	}
	if got := Default().SquaredNorm(nil); got != 0 {
		t.Errorf("SquaredNorm(nil) = %v", got)
	}
}

// TestSquaredNormBlockOrder pins the documented order of addition: it differs
// from a plain running sum, so a backend that drops the blocks fails it.
func TestSquaredNormBlockOrder(t *testing.T) {
	x := make([]float32, 2*ReduceBlock)
	x[0] = 1 << 27 // 2^54 squared dwarfs the ones that follow
	for i := 1; i < len(x); i++ {
		x[i] = 1
	}
	// Block 0: 2^54 + 4095 ones, each lost to rounding; block 1: 4096.
	want := float64(1<<54) + 4096
	for _, b := range []Backend{Reference{}, NewCPU(2)} {
		if got := b.SquaredNorm(x); got != want {
			t.Errorf("%s: %v, want %v", b.Name(), got, want)
		}
	}
}

func TestPairwiseSquaredDistancesMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, k := range []int{0, 1, 2, 3, 6, 9} {
		for _, n := range []int{0, 1, 7, ReduceBlock + 1, 5*ReduceBlock + 3} {
			xs := randVecs(r, k, n)
			init := make([]float64, k*k)
			for i := range init {
				init[i] = float64(i)
			}
			want := slices.Clone(init)
			Reference{}.PairwiseSquaredDistances(want, xs)
			for _, c := range backends() {
				got := slices.Clone(init)
				c.PairwiseSquaredDistances(got, xs)
				sameBits64(t, fmt.Sprintf("k=%d n=%d threads=%d", k, n, c.Threads()), got, want)
			}
			// Symmetric, diagonal untouched, and equal to the norm of the difference.
			for i := range k {
				if want[i*k+i] != init[i*k+i] {
					t.Fatalf("diagonal %d changed", i)
				}
				for j := i + 1; j < k; j++ {
					diff := make([]float32, n)
					for c := range diff {
						diff[c] = xs[i][c] - xs[j][c]
					}
					got := want[i*k+j] - init[i*k+j]
					if e := (Reference{}).SquaredNorm(diff); math.Abs(got-e) > 1e-5*e {
						t.Fatalf("d(%d,%d) = %v, ‖xi−xj‖² = %v", i, j, got, e)
					}
				}
			}
		}
	}
}

// sortMedian is the per-coordinate oracle: sort with the library, take the middle.
func sortMedian(xs [][]float32, i int) float32 {
	v := make([]float64, len(xs))
	for k := range xs {
		v[k] = float64(xs[k][i])
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return float32(v[n/2])
	}
	return float32((v[n/2-1] + v[n/2]) / 2)
}

func sortTrimmedMean(xs [][]float32, i, k int) float32 {
	v := make([]float64, len(xs))
	for j := range xs {
		v[j] = float64(xs[j][i])
	}
	slices.Sort(v)
	var s float64
	for _, x := range v[k : len(v)-k] {
		s += x
	}
	return float32(s / float64(len(v)-2*k))
}

func TestMedianTrimmedMean(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, k := range []int{1, 2, 3, 4, 7, 16, 31} {
		for _, n := range []int{0, 1, 5, sortChunk + 3, 3*sortChunk + 1} {
			t.Run(fmt.Sprintf("k=%d/n=%d", k, n), func(t *testing.T) {
				xs := randVecs(r, k, n)
				// Ties and signed zeros.
				for i := 0; i < n; i += 3 {
					xs[0][i] = xs[k-1][i]
					xs[k/2][i] = float32(math.Copysign(0, float64(i%2)-0.5))
				}
				wantMed := make([]float32, n)
				Reference{}.Median(wantMed, xs)
				for i := range n {
					if o := sortMedian(xs, i); o != wantMed[i] {
						t.Fatalf("reference median [%d] = %v, sorted %v", i, wantMed[i], o)
					}
				}
				trims := []int{0, (k - 1) / 2}
				wantTM := make([][]float32, len(trims))
				for ti, tr := range trims {
					wantTM[ti] = make([]float32, n)
					Reference{}.TrimmedMean(wantTM[ti], xs, tr)
					for i := range n {
						if o := sortTrimmedMean(xs, i, tr); o != wantTM[ti][i] {
							t.Fatalf("reference trimmed mean k=%d [%d] = %v, sorted %v", tr, i, wantTM[ti][i], o)
						}
					}
				}
				for _, c := range backends() {
					got := make([]float32, n)
					c.Median(got, xs)
					sameBits32(t, "Median", got, wantMed)
					for ti, tr := range trims {
						c.TrimmedMean(got, xs, tr)
						sameBits32(t, fmt.Sprintf("TrimmedMean k=%d", tr), got, wantTM[ti])
					}
				}
			})
		}
	}
}

func TestMedianTotalOrder(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	tests := []struct {
		name string
		vals []float32
		want float32
	}{
		{"signed zeros", []float32{0, negZero, negZero}, negZero},
		{"signed zeros up", []float32{negZero, 0, 0}, 0},
		{"nan last", []float32{nan, 1, 2}, 2},
		{"inf", []float32{inf, -inf, 3}, 3},
		{"even", []float32{1, 2, 4, 100}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			xs := make([][]float32, len(tc.vals))
			for i, v := range tc.vals {
				xs[i] = []float32{v}
			}
			for _, b := range []Backend{Reference{}, NewCPU(2)} {
				got := make([]float32, 1)
				b.Median(got, xs)
				if math.Float32bits(got[0]) != math.Float32bits(tc.want) {
					t.Errorf("%s: %v, want %v", b.Name(), got[0], tc.want)
				}
			}
		})
	}
}

func TestQuantizeInt8(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, block := range []int{1, 7, 64, 4096, 100000} {
		for _, n := range lengths {
			t.Run(fmt.Sprintf("block=%d/n=%d", block, n), func(t *testing.T) {
				x := randVec(r, n)
				if n > 2*block {
					clear(x[block : 2*block]) // an all-zero block
				}
				if n > 10 {
					x[3], x[5] = float32(math.NaN()), float32(math.Copysign(0, -1))
				}
				nb := (n + block - 1) / block
				wantQ, wantS := make([]int8, n), make([]float32, nb)
				Reference{}.QuantizeInt8(wantQ, wantS, x, block)
				wantX := make([]float32, n)
				Reference{}.DequantizeInt8(wantX, wantQ, wantS, block)
				for i, v := range x {
					s := wantS[i/block]
					if math.IsNaN(float64(v)) {
						if wantQ[i] != 0 {
							t.Fatalf("NaN at %d quantized to %d", i, wantQ[i])
						}
						continue
					}
					if e := math.Abs(float64(v) - float64(wantX[i])); e > float64(s)/2*(1+1e-6) {
						t.Fatalf("[%d] %v → %d×%v = %v: error %v > scale/2", i, v, wantQ[i], s, wantX[i], e)
					}
				}
				for _, c := range backends() {
					q, s := make([]int8, n), make([]float32, nb)
					c.QuantizeInt8(q, s, x, block)
					if !slices.Equal(q, wantQ) {
						t.Fatalf("threads=%d: q differs from reference", c.Threads())
					}
					sameBits32(t, "scales", s, wantS)
					got := make([]float32, n)
					c.DequantizeInt8(got, q, s, block)
					sameBits32(t, "dequantized", got, wantX)
				}
			})
		}
	}
}

func TestQuantizeRoundsHalfAwayFromZero(t *testing.T) {
	// Block max 127 gives scale 1: the values are their own quotients.
	x := []float32{127, 2.5, -2.5, 0.5, -0.5, 1.49, -126.5}
	want := []int8{127, 3, -3, 1, -1, 1, -127}
	for _, b := range []Backend{Reference{}, NewCPU(2)} {
		q, s := make([]int8, len(x)), make([]float32, 1)
		b.QuantizeInt8(q, s, x, len(x))
		if s[0] != 1 || !slices.Equal(q, want) {
			t.Errorf("%s: q = %v scale %v, want %v scale 1", b.Name(), q, s[0], want)
		}
	}
}

func TestFirstNonFinite(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	big := 5*streamChunk + 3
	tests := []struct {
		name string
		n    int
		put  map[int]float32
		want int
	}{
		{"empty", 0, nil, -1},
		{"finite", big, map[int]float32{7: math.MaxFloat32, 9: -math.MaxFloat32, 11: math.SmallestNonzeroFloat32}, -1},
		{"nan first", big, map[int]float32{0: nan}, 0},
		{"inf last", big, map[int]float32{big - 1: inf}, big - 1},
		{"neg inf", 9, map[int]float32{8: -inf}, 8},
		{"earliest of many", big, map[int]float32{4*streamChunk + 1: nan, streamChunk + 5: -inf, 3 * streamChunk: inf}, streamChunk + 5},
		{"in tail", 13, map[int]float32{12: nan, 11: 1}, 12},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := make([]float32, tc.n)
			for i, v := range tc.put {
				x[i] = v
			}
			if got := (Reference{}).FirstNonFinite(x); got != tc.want {
				t.Errorf("reference: %d, want %d", got, tc.want)
			}
			for _, c := range backends() {
				if got := c.FirstNonFinite(x); got != tc.want {
					t.Errorf("threads=%d: %d, want %d", c.Threads(), got, tc.want)
				}
			}
		})
	}
}

func TestLengthMismatchPanics(t *testing.T) {
	c := NewCPU(2)
	tests := []struct {
		name string
		f    func(Backend)
	}{
		{"WeightedSum w", func(b Backend) { b.WeightedSum(make([]float64, 3), []float64{1}, nil) }},
		{"WeightedSum xs", func(b Backend) { b.WeightedSum(make([]float64, 3), []float64{1}, [][]float32{make([]float32, 2)}) }},
		{"Store", func(b Backend) { b.Store(make([]float32, 2), make([]float64, 3), 1) }},
		{"Pairwise d", func(b Backend) { b.PairwiseSquaredDistances(make([]float64, 3), [][]float32{{1}, {2}}) }},
		{"Pairwise xs", func(b Backend) { b.PairwiseSquaredDistances(make([]float64, 4), [][]float32{{1}, {2, 3}}) }},
		{"Median none", func(b Backend) { b.Median(make([]float32, 2), nil) }},
		{"TrimmedMean k", func(b Backend) { b.TrimmedMean(make([]float32, 1), [][]float32{{1}, {2}}, 1) }},
		{"Quantize scales", func(b Backend) { b.QuantizeInt8(make([]int8, 5), make([]float32, 1), make([]float32, 5), 4) }},
		{"Quantize block", func(b Backend) { b.QuantizeInt8(nil, nil, nil, 0) }},
		{"Dequantize len", func(b Backend) { b.DequantizeInt8(make([]float32, 4), make([]int8, 5), make([]float32, 2), 4) }},
	}
	for _, tc := range tests {
		for _, b := range []Backend{Reference{}, c} {
			t.Run(tc.name+"/"+b.Name(), func(t *testing.T) {
				defer func() {
					if recover() == nil {
						t.Fatal("no panic")
					}
				}()
				tc.f(b)
			})
		}
	}
}

// TestConcurrentCalls runs calls on one CPU from several goroutines at once
// (they share its workers); each must still match the reference.
func TestConcurrentCalls(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	c := NewCPU(3)
	const n = 3*wsumChunk + 11
	xs := randVecs(r, 6, n)
	w := []float64{1, 2, 3, 4, 5, 6}
	want := make([]float64, n)
	Reference{}.WeightedSum(want, w, xs)
	wantNorm := Reference{}.SquaredNorm(xs[0])
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 5 {
				got := make([]float64, n)
				c.WeightedSum(got, w, xs)
				for i := range got {
					if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
						errs <- fmt.Errorf("WeightedSum [%d] differs", i)
						return
					}
				}
				if c.SquaredNorm(xs[0]) != wantNorm {
					errs <- fmt.Errorf("SquaredNorm differs")
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestNoRaceHotMethodsDoNotAllocate(t *testing.T) {
	fedtest.SkipUnderRace(t)
	r := rand.New(rand.NewPCG(17, 18))
	const n = 4*wsumChunk + 5
	xs := randVecs(r, 16, n)
	w := make([]float64, 16)
	acc := make([]float64, n)
	dst := make([]float32, n)
	q := make([]int8, n)
	scales := make([]float32, (n+63)/64)
	d := make([]float64, 16*16)
	w17, xs17 := append(slices.Clone(w), 1), append(slices.Clone(xs), xs[0])
	for _, threads := range threadCounts {
		c := NewCPU(threads)
		tests := []struct {
			name string
			f    func()
		}{
			{"WeightedSum", func() { c.WeightedSum(acc, w, xs) }},
			{"Store", func() { c.Store(dst, acc, 0.5) }},
			{"WeightedMean", func() { c.WeightedMean(dst, w, xs, 0.5) }},
			{"WeightedMean/17", func() { c.WeightedMean(dst, w17, xs17, 0.5) }},
			{"Scale", func() { c.Scale(dst, 1) }},
			{"SquaredNorm", func() { c.SquaredNorm(xs[0]) }},
			{"FirstNonFinite", func() { c.FirstNonFinite(xs[1]) }},
			{"QuantizeInt8", func() { c.QuantizeInt8(q, scales, xs[2], 64) }},
			{"DequantizeInt8", func() { c.DequantizeInt8(dst, q, scales, 64) }},
			{"PairwiseSquaredDistances", func() { c.PairwiseSquaredDistances(d[:16], xs[:4]) }},
			{"Median", func() { c.Median(dst, xs) }},
			{"TrimmedMean", func() { c.TrimmedMean(dst, xs, 2) }},
		}
		for _, tc := range tests {
			tc.f() // warm: free list and scratch filled
			if a := testing.AllocsPerRun(20, tc.f); a != 0 {
				t.Errorf("threads=%d %s: %v allocations per call", threads, tc.name, a)
			}
		}
	}
}

func TestTotalOrderKeyRoundTrip(t *testing.T) {
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, -1, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.MaxFloat32, math.SmallestNonzeroFloat32}
	for _, v := range vals {
		if got := fromTotalOrderKey(totalOrderKey(v)); math.Float32bits(got) != math.Float32bits(v) {
			t.Errorf("%v round-trips to %v", v, got)
		}
	}
	sorted := []float32{float32(math.Inf(-1)), -1, float32(math.Copysign(0, -1)), 0, math.SmallestNonzeroFloat32, 1, float32(math.Inf(1)), float32(math.NaN())}
	for i := 1; i < len(sorted); i++ {
		if totalOrderKey(sorted[i-1]) >= totalOrderKey(sorted[i]) {
			t.Errorf("key(%v) >= key(%v)", sorted[i-1], sorted[i])
		}
	}
}

// TestFirstNonFiniteEveryPosition puts one non-finite value (and a finite
// value with a nearly-full exponent after it) at every position of a short
// vector, to cover each lane of the eight-at-a-time test.
func TestFirstNonFiniteEveryPosition(t *testing.T) {
	c := NewCPU(2)
	bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(0xff800001)}
	for n := 1; n <= 40; n++ {
		for pos := range n {
			for _, v := range bad {
				x := make([]float32, n)
				for i := range x {
					x[i] = math.MaxFloat32 // exponent 0xfe: finite
				}
				x[pos] = v
				if pos+1 < n {
					x[pos+1] = float32(math.Inf(1))
				}
				if got := c.FirstNonFinite(x); got != pos {
					t.Fatalf("n=%d: %v at %d: got %d", n, v, pos, got)
				}
			}
		}
		if got := c.FirstNonFinite(make([]float32, n)); got != -1 {
			t.Fatalf("n=%d zeros: got %d", n, got)
		}
	}
}

// TestDroppedCPUsLeakNoGoroutines checks that CPUs, which share the
// process-wide worker pool, leave no goroutines behind when dropped, and
// that a call on a CPU dropped right after it (the receiver dead while the
// call runs) completes.
func TestDroppedCPUsLeakNoGoroutines(t *testing.T) {
	x := make([]float32, 8*streamChunk)
	before := runtime.NumGoroutine()
	for range 50 {
		NewCPU(4).Scale(x, 2)
		runtime.GC()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+3*4 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+3*4 {
		t.Errorf("%d goroutines after dropping 50 CPUs, %d before", n, before)
	}
}
