//go:build amd64 && !purego

package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/sys/cpu"
)

// availablePaths are the WeightedSum inner loops this CPU can run.
func availablePaths() map[string]int {
	p := map[string]int{"go": wsumGo}
	if cpu.X86.HasAVX2 {
		p["avx2"] = wsumAVX2
	}
	if cpu.X86.HasAVX512F {
		p["avx512"] = wsumAVX512
	}
	return p
}

func withPath(path int, f func()) {
	old := wsumPath
	wsumPath = path
	defer func() { wsumPath = old }()
	f()
}

// TestWeightedSumEveryPath runs each inner loop against Reference, with
// special values mixed in: the assembly must round exactly as Go does.
func TestWeightedSumEveryPath(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	specials := []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0, float32(math.Copysign(0, -1)),
		math.SmallestNonzeroFloat32, math.MaxFloat32, -math.MaxFloat32}
	for name, path := range availablePaths() {
		for _, k := range []int{1, 3, 4, 8, 13} {
			for _, n := range []int{1, 15, 16, 17, 64, 1000, wsumTile + 31} {
				t.Run(fmt.Sprintf("%s/k=%d/n=%d", name, k, n), func(t *testing.T) {
					xs := randVecs(r, k, n)
					for i := range n / 10 {
						xs[r.IntN(k)][r.IntN(n)] = specials[i%len(specials)]
					}
					w := make([]float64, k)
					for i := range w {
						w[i] = r.NormFloat64() * 1e30
					}
					init := make([]float64, n)
					for i := range init {
						init[i] = r.NormFloat64() * 1e35
					}
					want := slices.Clone(init)
					Reference{}.WeightedSum(want, w, xs)
					got := slices.Clone(init)
					withPath(path, func() { NewCPU(2).WeightedSum(got, w, xs) })
					for i := range want {
						// NaN payloads are not part of the contract; every other bit is.
						if math.IsNaN(want[i]) && math.IsNaN(got[i]) {
							continue
						}
						if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
							t.Fatalf("[%d] = %v, reference %v", i, got[i], want[i])
						}
					}
				})
			}
		}
	}
}

// TestWeightedMeanEveryPath runs the fused kernel (and the fallbacks)
// against Reference with special values mixed in.
func TestWeightedMeanEveryPath(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	specials := []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0, float32(math.Copysign(0, -1)),
		math.SmallestNonzeroFloat32, math.MaxFloat32, -math.MaxFloat32}
	for name, path := range availablePaths() {
		for _, k := range []int{1, 2, 7, 16, 17} {
			for _, n := range []int{1, 31, 32, 33, 64, 1000, wsumChunk + 31} {
				t.Run(fmt.Sprintf("%s/k=%d/n=%d", name, k, n), func(t *testing.T) {
					xs := randVecs(r, k, n)
					for i := range n / 10 {
						xs[r.IntN(k)][r.IntN(n)] = specials[i%len(specials)]
					}
					// Signed zeros everywhere in one column: +0 + (−0) must give +0.
					for j := range xs {
						xs[j][0] = float32(math.Copysign(0, -1))
					}
					w := make([]float64, k)
					for i := range w {
						w[i] = r.NormFloat64() * 1e30
					}
					for _, s := range []float64{1e-30, 1e-40, -3} {
						want := make([]float32, n)
						Reference{}.WeightedMean(want, w, xs, s)
						got := make([]float32, n)
						withPath(path, func() { NewCPU(2).WeightedMean(got, w, xs, s) })
						for i := range want {
							if want[i] != want[i] && got[i] != got[i] {
								continue // NaN payloads are not part of the contract
							}
							if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
								t.Fatalf("s=%v [%d] = %v, reference %v", s, i, got[i], want[i])
							}
						}
					}
				})
			}
		}
	}
}

// BenchmarkWeightedSumPath compares the inner loops on one core, with the
// data in cache (16 inputs of one tile each) and in memory.
func BenchmarkWeightedSumPath(b *testing.B) {
	for _, n := range []int{wsumTile, *benchN} {
		xs := benchInputs(16, n)
		w := make([]float64, 16)
		acc := make([]float64, n)
		c := NewCPU(1)
		for name, path := range availablePaths() {
			b.Run(fmt.Sprintf("%s/16x%d", name, n), func(b *testing.B) {
				b.SetBytes(int64(16 * n * 4))
				withPath(path, func() {
					for b.Loop() {
						c.WeightedSum(acc, w, xs)
					}
				})
			})
		}
	}
}
