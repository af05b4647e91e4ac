package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttnVecSameBits checks CachedAttention's group-at-once assembly
// loops against the per-head, per-key loops they replace (dotVec per key
// times the scale; clear, then axpyVec per key): the same bits for every
// element, over head sizes with and without a 64-wide block, 1 to 4 query
// heads per key/value head, key counts around the 4-key unroll and the
// 16-key blocks, and a row stride wider than a head.
func TestAttnVecSameBits(t *testing.T) {
	if !haveAVX2 {
		t.Skip("no AVX2 and FMA: the assembly loops are not used")
	}
	rng := rand.New(rand.NewPCG(7, 14))
	for _, hd := range []int{8, 16, 24, 64, 72, 128, 136} {
		for _, rep := range []int{1, 2, 3, 4} {
			for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 130} {
				t.Run(fmt.Sprintf("hd=%d/rep=%d/n=%d", hd, rep, n), func(t *testing.T) {
					stride := 3*hd + 8
					k := make([]float32, (n-1)*stride+hd)
					v := make([]float32, len(k))
					q := make([]float32, rep*hd)
					for _, x := range [][]float32{k, v, q} {
						for i := range x {
							x[i] = float32(rng.NormFloat64())
						}
					}
					const scale = 0.125
					got, want := make([]float32, rep*n), make([]float32, rep*n)
					if !attnScoresVec(got, q, k, stride, hd, scale) {
						t.Fatal("attnScoresVec did nothing")
					}
					for h := range rep {
						for j := range n {
							_, dot := dotVec(q[h*hd:(h+1)*hd], k[j*stride:j*stride+hd])
							want[h*n+j] = scale * dot
						}
					}
					sameBits(t, "score", got, want)

					p := make([]float32, rep*n)
					inv := make([]float32, rep)
					for i := range p {
						p[i] = rng.Float32()
					}
					for h := range inv {
						inv[h] = 1 / float32(h+3)
					}
					gotO, wantO := make([]float32, rep*hd), make([]float32, rep*hd)
					if !attnValuesVec(gotO, v, stride, hd, p, inv) {
						t.Fatal("attnValuesVec did nothing")
					}
					for h := range rep {
						for j := range n {
							axpyVec(wantO[h*hd:(h+1)*hd], v[j*stride:j*stride+hd], p[h*n+j]*inv[h])
						}
					}
					sameBits(t, "output", gotO, wantO)
				})
			}
		}
	}
	if attnScoresVec(make([]float32, 2), make([]float32, 12), make([]float32, 24), 12, 12, 1) {
		t.Error("attnScoresVec took a head of 12 (not a multiple of 8)")
	}
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s %d: %v (%08x), the per-key loop gives %v (%08x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}
