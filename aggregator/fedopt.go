package aggregator

import (
	"fmt"
	"math"
)

// OptRule selects FedOpt's second-moment rule.
type OptRule int

// The FedOpt variants of Reddi et al., "Adaptive Federated Optimization" (2021).
const (
	Adam    OptRule = iota // v = β₂·v + (1−β₂)·Δ²
	Yogi                   // v = v − (1−β₂)·Δ²·sign(v − Δ²)
	Adagrad                // v = v + Δ²
)

// FedOpt is an adaptive server optimizer over the FedAvg aggregate, as
// Flower's FedAdam, FedYogi and FedAdagrad: with Δ = fedavg − global,
//
//	m = β₁·m + (1−β₁)·Δ
//	v = (the rule's update of v with Δ²)
//	global = global + η·m / (√v + τ)
//
// m and v start at zero and are kept as state tensors "m/<name>", "v/<name>"
// (F32). Like Flower's implementation there is no bias correction.
// Arithmetic is in float64 per element; m, v and the result are rounded
// once to float32, and the stored m and v are the ones used.
type FedOpt struct {
	Rule  OptRule
	Eta   float64 // η, server learning rate
	Beta1 float64 // β₁
	Beta2 float64 // β₂ (unused by Adagrad)
	Tau   float64 // τ, adaptivity
}

var _ ServerOptimizer = (*FedOpt)(nil)

// NewFedAdam returns FedAdam with Flower's defaults: η = 0.1, β₁ = 0.9, β₂ = 0.99, τ = 1e-9.
func NewFedAdam() *FedOpt { return &FedOpt{Rule: Adam, Eta: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-9} }

// NewFedYogi returns FedYogi with Flower's defaults: η = 0.01, β₁ = 0.9, β₂ = 0.99, τ = 1e-3.
func NewFedYogi() *FedOpt { return &FedOpt{Rule: Yogi, Eta: 0.01, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3} }

// NewFedAdagrad returns FedAdagrad with Flower's defaults: η = 0.1, β₁ = 0, τ = 1e-9.
func NewFedAdagrad() *FedOpt { return &FedOpt{Rule: Adagrad, Eta: 0.1, Beta1: 0, Tau: 1e-9} }

// Name returns "fedadam", "fedyogi" or "fedadagrad".
func (s *FedOpt) Name() string {
	switch s.Rule {
	case Yogi:
		return "fedyogi"
	case Adagrad:
		return "fedadagrad"
	}
	return "fedadam"
}

// Params returns eta, beta_1, beta_2 (not for Adagrad) and tau.
func (s *FedOpt) Params() map[string]float64 {
	p := map[string]float64{"eta": s.Eta, "beta_1": s.Beta1, "tau": s.Tau}
	if s.Rule != Adagrad {
		p["beta_2"] = s.Beta2
	}
	return p
}

func (s *FedOpt) validate() error {
	switch {
	case !(s.Eta > 0):
		return fmt.Errorf("%w: %s eta %v must be positive", ErrBadParams, s.Name(), s.Eta)
	case s.Beta1 < 0 || s.Beta1 >= 1:
		return fmt.Errorf("%w: %s beta_1 %v must be in [0, 1)", ErrBadParams, s.Name(), s.Beta1)
	case s.Rule != Adagrad && (s.Beta2 < 0 || s.Beta2 >= 1):
		return fmt.Errorf("%w: %s beta_2 %v must be in [0, 1)", ErrBadParams, s.Name(), s.Beta2)
	case !(s.Tau > 0):
		return fmt.Errorf("%w: %s tau %v must be positive", ErrBadParams, s.Name(), s.Tau)
	}
	return nil
}

// NeedsDistances returns false.
func (*FedOpt) NeedsDistances() bool { return false }

// Check accepts any n >= 1.
func (s *FedOpt) Check(n int) error { return checkAtLeast(s.Name(), n, 1) }

// Plan averages every input by its weight, as FedAvg.
func (s *FedOpt) Plan(weights []float64, _ []float64) (*Plan, error) {
	if err := s.Check(len(weights)); err != nil {
		return nil, err
	}
	return weightedPlan(weights, allIndices(len(weights)))
}

// Optimizes returns true.
func (*FedOpt) Optimizes() bool { return true }

// StateSlots returns {"m", "v"}.
func (*FedOpt) StateSlots() []string { return []string{"m", "v"} }

// Step implements ServerOptimizer.
func (s *FedOpt) Step(dst, global, delta []float32, state [][]float32) {
	m, v := state[0], state[1]
	b1, b2 := s.Beta1, s.Beta2
	for i := range dst {
		d := float64(delta[i])
		d2 := float64(d * d)
		mi := float32(float64(b1*float64(m[i])) + float64((1-b1)*d))
		vo := float64(v[i])
		var vi float32
		switch s.Rule {
		case Adam:
			vi = float32(float64(b2*vo) + float64((1-b2)*d2))
		case Yogi:
			vi = float32(vo - float64(float64((1-b2)*d2)*sign(vo-d2)))
		case Adagrad:
			vi = float32(vo + d2)
		}
		m[i], v[i] = mi, vi
		step := float64(s.Eta*float64(mi)) / (math.Sqrt(float64(vi)) + s.Tau)
		dst[i] = float32(float64(global[i]) + step)
	}
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}
