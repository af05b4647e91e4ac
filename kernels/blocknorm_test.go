package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestBlockSquaredNorms(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, ReduceBlock - 1, ReduceBlock, 8*ReduceBlock + 3, 9*ReduceBlock + 17} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		out := make([]float64, (n+ReduceBlock-1)/ReduceBlock)
		BlockSquaredNorms(out, x)
		var sum float64
		for _, p := range out {
			sum += p
		}
		if want := (Reference{}).SquaredNorm(x); math.Float64bits(sum) != math.Float64bits(want) {
			t.Errorf("n=%d: partials add to %v, Reference.SquaredNorm gives %v", n, sum, want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("a wrong number of partials did not panic")
		}
	}()
	BlockSquaredNorms(make([]float64, 1), make([]float32, ReduceBlock+1))
}
