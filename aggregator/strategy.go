package aggregator

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/fedtune/fedtune/kernels"
)

// Sentinel errors for callers.
var (
	// ErrUnknownStrategy is returned for a strategy name New does not know.
	ErrUnknownStrategy = errors.New("aggregator: unknown strategy")
	// ErrBadParams is wrapped by errors about strategy parameters or options
	// that cannot work (including ones that do not fit the number of inputs).
	ErrBadParams = errors.New("aggregator: bad parameters")
	// ErrNoViableUpdates is returned when no input survives validation.
	ErrNoViableUpdates = errors.New("aggregator: no viable updates")
)

// Strategy decides how the accepted updates of a round combine into the new
// global model. The driver (Aggregate) does all I/O: it validates the
// inputs, puts them in canonical order, computes the global statistics the
// strategy asks for, and then streams the inputs chunk by chunk through the
// Plan's Combiner. Implementations must be deterministic.
type Strategy interface {
	// Name is the strategy's command-line name ("fedavg", "krum", ...).
	Name() string
	// Params returns the effective parameters, under Flower's names, for
	// the round's record.
	Params() map[string]float64
	// NeedsDistances reports whether Plan needs the pairwise squared
	// distances between the inputs.
	NeedsDistances() bool
	// Check reports whether the strategy can combine n inputs.
	Check(n int) error
	// Plan decides how the n = len(weights) accepted inputs combine, in
	// canonical order. weights[k] is input k's sample count; dist is the
	// n×n matrix of squared distances (row-major) when NeedsDistances, else nil.
	Plan(weights []float64, dist []float64) (*Plan, error)
}

// Plan is what a Strategy decided for one round.
type Plan struct {
	// Use lists, ascending, the inputs the Combiner reads.
	Use []int
	// Combiner combines chunks of the used inputs.
	Combiner Combiner
	// Shares is each input's share in the result (len n): its normalized
	// weight for averaging rules, 1/len(Use) or 0 for the others.
	Shares []float64
}

// Combiner combines one chunk of coordinates. xs[j] is the chunk of input
// Use[j]; dst has the same length. It must give the same bits however the
// coordinates are split into chunks. It must not write to xs: a chunk may
// be a read-only view of a memory-mapped input file.
type Combiner interface {
	Combine(be kernels.Backend, dst []float32, xs [][]float32)
}

// ServerOptimizer is a Strategy that treats its combined result as a
// pseudo-gradient against the current global model and keeps server state
// (FedAvgM's momentum, FedOpt's m and v) as tensors named "slot/<tensor>".
type ServerOptimizer interface {
	Strategy
	// Optimizes reports whether Step runs at all; when it is false the
	// combined result is the new global, as with FedAvg.
	Optimizes() bool
	// StateSlots names the state tensors kept per model tensor; none means
	// the strategy needs no state this time (FedAvgM with no momentum).
	StateSlots() []string
	// Step applies the server update to one chunk: delta is the
	// pseudo-gradient (combined − global), state[s] the chunk of slot s
	// (read and updated in place, zeros in the first round), and the new
	// global goes to dst.
	Step(dst, global, delta []float32, state [][]float32)
}

// Names lists the strategy names New accepts.
func Names() []string {
	return []string{"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "diloco", "median", "trimmed-mean", "krum", "multi-krum", "bulyan"}
}

// New returns the strategy called name with its defaults (Flower's)
// overridden by params, keyed by the names Params reports:
//
//	fedavgm:                server_learning_rate (1), server_momentum (0)
//	fedadam:                eta (0.1), beta_1 (0.9), beta_2 (0.99), tau (1e-9)
//	fedyogi:                eta (0.01), beta_1 (0.9), beta_2 (0.99), tau (1e-3)
//	fedadagrad:             eta (0.1), beta_1 (0), tau (1e-9)
//	diloco:                 learning_rate (0.7), momentum (0.9): the outer Nesterov SGD
//	trimmed-mean:           beta (0.2), the fraction cut from each end
//	krum, multi-krum:       num_malicious (0); multi-krum also to_keep (0 = n − f)
//	bulyan:                 num_malicious (0)
//
// An unknown parameter for the strategy is an error.
func New(name string, params map[string]float64) (Strategy, error) {
	var s Strategy
	var fields map[string]*float64
	switch name {
	case "fedavg":
		s, fields = &FedAvg{}, nil
	case "fedavgm":
		m := &FedAvgM{ServerLR: 1}
		s, fields = m, map[string]*float64{"server_learning_rate": &m.ServerLR, "server_momentum": &m.Momentum}
	case "fedadam", "fedyogi", "fedadagrad":
		var o *FedOpt
		switch name {
		case "fedadam":
			o = NewFedAdam()
		case "fedyogi":
			o = NewFedYogi()
		default:
			o = NewFedAdagrad()
		}
		s, fields = o, map[string]*float64{"eta": &o.Eta, "beta_1": &o.Beta1, "tau": &o.Tau}
		if o.Rule != Adagrad {
			fields["beta_2"] = &o.Beta2
		}
	case "diloco":
		d := NewDiLoCo()
		s, fields = d, map[string]*float64{"learning_rate": &d.LR, "momentum": &d.Momentum}
	case "median":
		s = &Median{}
	case "trimmed-mean":
		t := &TrimmedMean{Beta: 0.2}
		s, fields = t, map[string]*float64{"beta": &t.Beta}
	case "krum", "multi-krum":
		k := &Krum{Multi: name == "multi-krum"}
		var f, keep float64
		s, fields = k, map[string]*float64{"num_malicious": &f}
		if k.Multi {
			fields["to_keep"] = &keep
		}
		if err := setParams(name, fields, params); err != nil {
			return nil, err
		}
		var err error
		if k.Byzantine, err = count(name, "num_malicious", f); err != nil {
			return nil, err
		}
		if k.Keep, err = count(name, "to_keep", keep); err != nil {
			return nil, err
		}
		return s, nil
	case "bulyan":
		b := &Bulyan{}
		var f float64
		if err := setParams(name, map[string]*float64{"num_malicious": &f}, params); err != nil {
			return nil, err
		}
		var err error
		if b.Byzantine, err = count(name, "num_malicious", f); err != nil {
			return nil, err
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownStrategy, name, strings.Join(Names(), ", "))
	}
	if err := setParams(name, fields, params); err != nil {
		return nil, err
	}
	if v, ok := s.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func setParams(name string, fields map[string]*float64, params map[string]float64) error {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p, ok := fields[k]
		if !ok {
			known := make([]string, 0, len(fields))
			for f := range fields {
				known = append(known, f)
			}
			sort.Strings(known)
			if len(known) == 0 {
				return fmt.Errorf("%w: %s takes no parameter %q", ErrBadParams, name, k)
			}
			return fmt.Errorf("%w: %s has no parameter %q (it takes %s)", ErrBadParams, name, k, strings.Join(known, ", "))
		}
		v := params[k]
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: %s %s = %v is not finite", ErrBadParams, name, k, v)
		}
		*p = v
	}
	return nil
}

func count(name, param string, v float64) (int, error) {
	if v < 0 || v != math.Trunc(v) || v > 1<<20 {
		return 0, fmt.Errorf("%w: %s %s = %v must be a non-negative integer", ErrBadParams, name, param, v)
	}
	return int(v), nil
}

func totalWeight(w []float64) float64 {
	var s float64
	for _, v := range w {
		s += v
	}
	return s
}

func uniformShares(n int, use []int) []float64 {
	sh := make([]float64, n)
	for _, k := range use {
		sh[k] = 1 / float64(len(use))
	}
	return sh
}

func allIndices(n int) []int {
	use := make([]int, n)
	for i := range use {
		use[i] = i
	}
	return use
}
