package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttnVecSameBits checks CachedAttention's whole-row assembly loops
// against the per-key loops they replace (dotVec per key times the scale;
// clear, then axpyVec per key): the same bits for every element, over head
// sizes with and without a 64-wide block, key counts around the 4-key
// unroll, and a row stride wider than a head.
func TestAttnVecSameBits(t *testing.T) {
	if !haveAVX2 {
		t.Skip("no AVX2 and FMA: the assembly loops are not used")
	}
	rng := rand.New(rand.NewPCG(7, 14))
	for _, hd := range []int{8, 16, 24, 64, 72, 128, 136} {
		for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 33, 130} {
			t.Run(fmt.Sprintf("hd=%d/n=%d", hd, n), func(t *testing.T) {
				stride := 3*hd + 8
				k := make([]float32, (n-1)*stride+hd)
				v := make([]float32, len(k))
				q := make([]float32, hd)
				for _, x := range [][]float32{k, v, q} {
					for i := range x {
						x[i] = float32(rng.NormFloat64())
					}
				}
				const scale = 0.125
				got, want := make([]float32, n), make([]float32, n)
				if !attnScoresVec(got, q, k, stride, scale) {
					t.Fatal("attnScoresVec did nothing")
				}
				for j := range want {
					_, dot := dotVec(q, k[j*stride:j*stride+hd])
					want[j] = scale * dot
				}
				sameBitsAttn(t, "score", got, want)

				p := make([]float32, n)
				for j := range p {
					p[j] = rng.Float32()
				}
				const inv = 1 / 3.0
				gotO, wantO := make([]float32, hd), make([]float32, hd)
				for i := range gotO {
					gotO[i] = float32(math.NaN()) // overwritten, not read
				}
				if !attnValuesVec(gotO, v, stride, p, inv) {
					t.Fatal("attnValuesVec did nothing")
				}
				for j, pj := range p {
					axpyVec(wantO, v[j*stride:j*stride+hd], pj*inv)
				}
				sameBitsAttn(t, "output", gotO, wantO)
			})
		}
	}
	if attnScoresVec(make([]float32, 2), make([]float32, 12), make([]float32, 24), 12, 1) {
		t.Error("attnScoresVec took a head of 12 (not a multiple of 8)")
	}
}

func sameBitsAttn(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s %d: %v (%08x), the per-key loop gives %v (%08x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}
