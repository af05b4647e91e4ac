package aggregator

import (
	"fmt"
	"math"

	"github.com/fedtune/fedtune/kernels"
)

// FedAvg is sample-weighted federated averaging (McMahan et al., 2017):
// the new global is Σ n_k·x_k / Σ n_k, as Flower's aggregate computes it.
type FedAvg struct{}

var _ Strategy = (*FedAvg)(nil)

// Name returns "fedavg".
func (*FedAvg) Name() string { return "fedavg" }

// Params returns no parameters.
func (*FedAvg) Params() map[string]float64 { return map[string]float64{} }

// NeedsDistances returns false.
func (*FedAvg) NeedsDistances() bool { return false }

// Check accepts any n >= 1.
func (*FedAvg) Check(n int) error { return checkAtLeast("fedavg", n, 1) }

// Plan averages every input by its weight.
func (s *FedAvg) Plan(weights []float64, _ []float64) (*Plan, error) {
	if err := s.Check(len(weights)); err != nil {
		return nil, err
	}
	return weightedPlan(weights, allIndices(len(weights)))
}

func weightedPlan(weights []float64, use []int) (*Plan, error) {
	w := make([]float64, len(use))
	for j, k := range use {
		w[j] = weights[k]
	}
	total := totalWeight(w)
	if !(total > 0) || math.IsInf(total, 0) {
		return nil, fmt.Errorf("%w: total weight %v of %d inputs", ErrBadParams, total, len(use))
	}
	shares := make([]float64, len(weights))
	for j, k := range use {
		shares[k] = w[j] / total
	}
	return &Plan{Use: use, Combiner: &weightedMean{w: w, inv: 1 / total}, Shares: shares}, nil
}

// weightedMean accumulates Σ w_j·x_j in float64, in input order, and
// stores it times 1/Σ w_j rounded once to float32. For identical inputs
// with integer weights the sum is exact, so the mean is the input itself.
//
// It runs as kernels.WeightedMean (fused where the backend has the kernel:
// the float64 sums never leave the registers), which gives the bits of
// WeightedSum into a zeroed accumulator followed by Store.
type weightedMean struct {
	w   []float64
	inv float64
}

func (c *weightedMean) Combine(be kernels.Backend, dst []float32, xs [][]float32) {
	kernels.WeightedMean(be, dst, c.w, xs, c.inv)
}

func checkAtLeast(name string, n, min int) error {
	if n < min {
		if n == 0 {
			return fmt.Errorf("%s: %w", name, ErrNoViableUpdates)
		}
		return fmt.Errorf("%w: %s needs at least %d inputs, got %d", ErrBadParams, name, min, n)
	}
	return nil
}

// FedAvgM is FedAvg with server momentum (Hsu et al., 2019), as Flower's
// FedAvgM: with the pseudo-gradient g = global − fedavg, the momentum
// buffer becomes v = μ·v + g (v = g in the first round) and the new global
// is global − η·v. With η = 1 and μ = 0 (the defaults) it is FedAvg.
type FedAvgM struct {
	ServerLR float64 // η, server_learning_rate
	Momentum float64 // μ, server_momentum
}

var _ ServerOptimizer = (*FedAvgM)(nil)

// Name returns "fedavgm".
func (*FedAvgM) Name() string { return "fedavgm" }

// Params returns server_learning_rate and server_momentum.
func (s *FedAvgM) Params() map[string]float64 {
	return map[string]float64{"server_learning_rate": s.ServerLR, "server_momentum": s.Momentum}
}

func (s *FedAvgM) validate() error {
	if s.Momentum < 0 {
		return fmt.Errorf("%w: fedavgm server_momentum %v is negative", ErrBadParams, s.Momentum)
	}
	return nil
}

// NeedsDistances returns false.
func (*FedAvgM) NeedsDistances() bool { return false }

// Check accepts any n >= 1.
func (*FedAvgM) Check(n int) error { return checkAtLeast("fedavgm", n, 1) }

// Plan averages every input by its weight, as FedAvg.
func (s *FedAvgM) Plan(weights []float64, _ []float64) (*Plan, error) {
	if err := s.Check(len(weights)); err != nil {
		return nil, err
	}
	return weightedPlan(weights, allIndices(len(weights)))
}

// Optimizes reports whether a server step runs (η ≠ 1 or μ ≠ 0).
func (s *FedAvgM) Optimizes() bool { return s.ServerLR != 1 || s.Momentum != 0 }

// StateSlots returns {"momentum"} when μ > 0.
func (s *FedAvgM) StateSlots() []string {
	if s.Momentum > 0 {
		return []string{"momentum"}
	}
	return nil
}

// Step implements ServerOptimizer.
func (s *FedAvgM) Step(dst, global, delta []float32, state [][]float32) {
	mu, lr := s.Momentum, s.ServerLR
	for i := range dst {
		g := -delta[i] // Flower's pseudo-gradient: global − fedavg
		v := g
		if len(state) > 0 {
			v = float32(float64(mu*float64(state[0][i])) + float64(g))
			state[0][i] = v
		}
		dst[i] = float32(float64(global[i]) - float64(lr*float64(v)))
	}
}
