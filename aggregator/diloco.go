package aggregator

import "fmt"

// DiLoCo is the outer optimizer of DiLoCo (Douillard et al., "DiLoCo:
// Distributed Low-Communication Training of Language Models", 2023):
// SGD with Nesterov momentum over the sample-weighted average of the
// trainers' deltas. With the outer gradient g = global − fedavg (the
// negated average delta), as PyTorch's torch.optim.SGD(nesterov=True,
// dampening=0) computes it:
//
//	v = μ·v + g
//	global = global − η·(g + μ·v)
//
// v starts at zero (so v = g after the first round) and is kept as the
// state tensor "momentum/<name>" (F32) when μ > 0. Arithmetic is in
// float64 per element; v and the result are rounded once to float32, and
// the stored v is the one used. With η = 1 and μ = 0 it is FedAvg, bit for
// bit (no server step runs, as with FedAvgM).
type DiLoCo struct {
	LR       float64 // η, outer learning_rate (DiLoCo: 0.7)
	Momentum float64 // μ, outer Nesterov momentum (DiLoCo: 0.9)
}

var _ ServerOptimizer = (*DiLoCo)(nil)

// Defaults of DiLoCo's outer optimizer, as the paper ran it.
const (
	DiLoCoLR       = 0.7
	DiLoCoMomentum = 0.9
	// MaxDiLoCoLR bounds the outer learning rate: a step of more than
	// ten times the averaged delta is a mistake, not a setting.
	MaxDiLoCoLR = 10
)

// NewDiLoCo returns DiLoCo with the paper's outer optimizer: η = 0.7, μ = 0.9.
func NewDiLoCo() *DiLoCo { return &DiLoCo{LR: DiLoCoLR, Momentum: DiLoCoMomentum} }

// Name returns "diloco".
func (*DiLoCo) Name() string { return "diloco" }

// Params returns learning_rate and momentum.
func (s *DiLoCo) Params() map[string]float64 {
	return map[string]float64{"learning_rate": s.LR, "momentum": s.Momentum}
}

func (s *DiLoCo) validate() error {
	switch {
	case !(s.LR > 0) || s.LR > MaxDiLoCoLR:
		return fmt.Errorf("%w: diloco learning_rate %v must be in (0, %v]", ErrBadParams, s.LR, float64(MaxDiLoCoLR))
	case !(s.Momentum >= 0 && s.Momentum < 1):
		return fmt.Errorf("%w: diloco momentum %v must be in [0, 1)", ErrBadParams, s.Momentum)
	}
	return nil
}

// NeedsDistances returns false.
func (*DiLoCo) NeedsDistances() bool { return false }

// Check accepts any n >= 1.
func (*DiLoCo) Check(n int) error { return checkAtLeast("diloco", n, 1) }

// Plan averages every input by its weight, as FedAvg.
func (s *DiLoCo) Plan(weights []float64, _ []float64) (*Plan, error) {
	if err := s.Check(len(weights)); err != nil {
		return nil, err
	}
	return weightedPlan(weights, allIndices(len(weights)))
}

// Optimizes reports whether an outer step runs (η ≠ 1 or μ ≠ 0).
func (s *DiLoCo) Optimizes() bool { return s.LR != 1 || s.Momentum != 0 }

// StateSlots returns {"momentum"} when μ > 0.
func (s *DiLoCo) StateSlots() []string {
	if s.Momentum > 0 {
		return []string{"momentum"}
	}
	return nil
}

// Step implements ServerOptimizer.
func (s *DiLoCo) Step(dst, global, delta []float32, state [][]float32) {
	mu, lr := s.Momentum, s.LR
	for i := range dst {
		g := -float64(delta[i]) // the outer gradient: global − fedavg
		u := g
		if len(state) > 0 {
			v := float32(float64(mu*float64(state[0][i])) + g)
			state[0][i] = v
			u = g + float64(mu*float64(v))
		}
		dst[i] = float32(float64(global[i]) - float64(lr*u))
	}
}
