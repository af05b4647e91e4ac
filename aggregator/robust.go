package aggregator

import (
	"fmt"
	"math"
	"runtime"
	"sort"

	"github.com/fedtune/fedtune/kernels"
)

// Median is the coordinate-wise median (Yin et al., 2018), unweighted, as
// Flower's aggregate_median: for an even count, the mean of the two middle
// values.
type Median struct{}

var _ Strategy = (*Median)(nil)

// Name returns "median".
func (*Median) Name() string { return "median" }

// Params returns no parameters.
func (*Median) Params() map[string]float64 { return map[string]float64{} }

// NeedsDistances returns false.
func (*Median) NeedsDistances() bool { return false }

// Check accepts any n >= 1.
func (*Median) Check(n int) error { return checkAtLeast("median", n, 1) }

// Plan uses every input with an equal voice.
func (s *Median) Plan(weights []float64, _ []float64) (*Plan, error) {
	if err := s.Check(len(weights)); err != nil {
		return nil, err
	}
	use := allIndices(len(weights))
	return &Plan{Use: use, Combiner: medianCombiner{}, Shares: uniformShares(len(weights), use)}, nil
}

type medianCombiner struct{}

func (medianCombiner) Combine(be kernels.Backend, dst []float32, xs [][]float32) { be.Median(dst, xs) }

// TrimmedMean is the coordinate-wise trimmed mean (Yin et al., 2018),
// unweighted, as Flower's aggregate_trimmed_avg: at each coordinate the
// k = ⌊Beta·n⌋ smallest and k largest values are dropped and the rest
// averaged.
type TrimmedMean struct {
	Beta float64 // fraction cut from each end, in [0, 0.5)
}

var _ Strategy = (*TrimmedMean)(nil)

// Name returns "trimmed-mean".
func (*TrimmedMean) Name() string { return "trimmed-mean" }

// Params returns beta.
func (s *TrimmedMean) Params() map[string]float64 { return map[string]float64{"beta": s.Beta} }

func (s *TrimmedMean) validate() error {
	if s.Beta < 0 || s.Beta >= 0.5 {
		return fmt.Errorf("%w: trimmed-mean beta (--trim) %v must be in [0, 0.5)", ErrBadParams, s.Beta)
	}
	return nil
}

// NeedsDistances returns false.
func (*TrimmedMean) NeedsDistances() bool { return false }

func (s *TrimmedMean) cut(n int) int { return int(math.Floor(s.Beta * float64(n))) }

// Check requires at least one value left at each coordinate.
func (s *TrimmedMean) Check(n int) error {
	if err := checkAtLeast("trimmed-mean", n, 1); err != nil {
		return err
	}
	if err := s.validate(); err != nil {
		return err
	}
	if k := s.cut(n); 2*k >= n {
		return fmt.Errorf("%w: trimmed-mean beta %v cuts %d from each end of %d inputs, leaving none", ErrBadParams, s.Beta, k, n)
	}
	return nil
}

// Plan uses every input with an equal voice.
func (s *TrimmedMean) Plan(weights []float64, _ []float64) (*Plan, error) {
	if err := s.Check(len(weights)); err != nil {
		return nil, err
	}
	use := allIndices(len(weights))
	return &Plan{Use: use, Combiner: trimCombiner{k: s.cut(len(weights))}, Shares: uniformShares(len(weights), use)}, nil
}

type trimCombiner struct{ k int }

func (c trimCombiner) Combine(be kernels.Backend, dst []float32, xs [][]float32) {
	be.TrimmedMean(dst, xs, c.k)
}

// Krum is Krum (Blanchard et al., 2017) and, with Multi, Multi-Krum, as
// Flower's aggregate_krum. Each input's score is the sum of its squared
// distances to its n−f−2 nearest other inputs. Krum returns the input with
// the least score (the first in canonical order on a tie); Multi-Krum
// returns the sample-weighted average (FedAvg) of the Keep inputs with the
// least scores (ties again by canonical order).
type Krum struct {
	Byzantine int  // f, num_malicious
	Multi     bool // Multi-Krum
	Keep      int  // Multi-Krum's m, to_keep; 0 means n − f
}

var _ Strategy = (*Krum)(nil)

// Name returns "krum" or "multi-krum".
func (s *Krum) Name() string {
	if s.Multi {
		return "multi-krum"
	}
	return "krum"
}

// Params returns num_malicious (and to_keep for Multi-Krum).
func (s *Krum) Params() map[string]float64 {
	p := map[string]float64{"num_malicious": float64(s.Byzantine)}
	if s.Multi {
		p["to_keep"] = float64(s.Keep)
	}
	return p
}

// NeedsDistances returns true.
func (*Krum) NeedsDistances() bool { return true }

// Check requires n > 2f + 2 (so that n−f−2 ≥ 1 neighbours count) and,
// for Multi-Krum, Keep <= n.
func (s *Krum) Check(n int) error {
	if err := checkAtLeast(s.Name(), n, 1); err != nil {
		return err
	}
	if n <= 2*s.Byzantine+2 {
		return fmt.Errorf("%w: %s with %d byzantine (--byzantine) needs more than 2f+2 = %d inputs, got %d", ErrBadParams, s.Name(), s.Byzantine, 2*s.Byzantine+2, n)
	}
	if s.Multi && s.Keep > n {
		return fmt.Errorf("%w: multi-krum cannot keep %d (--keep) of %d inputs", ErrBadParams, s.Keep, n)
	}
	return nil
}

// krumScores returns the Krum score of each input in rem (indices into the
// n×n matrix d), counting the max(1, len(rem)−f−2) nearest others.
func krumScores(d []float64, n int, rem []int, f int) []float64 {
	closest := max(1, len(rem)-f-2)
	scores := make([]float64, len(rem))
	row := make([]float64, 0, len(rem))
	for a, i := range rem {
		row = row[:0]
		for _, j := range rem {
			if j != i {
				row = append(row, d[i*n+j])
			}
		}
		sort.Float64s(row)
		var s float64
		for _, v := range row[:min(closest, len(row))] {
			s += v
		}
		scores[a] = s
	}
	return scores
}

// Plan picks by Krum score.
func (s *Krum) Plan(weights []float64, dist []float64) (*Plan, error) {
	n := len(weights)
	if err := s.Check(n); err != nil {
		return nil, err
	}
	if len(dist) != n*n {
		return nil, fmt.Errorf("%w: krum needs an %d×%d distance matrix", ErrBadParams, n, n)
	}
	scores := krumScores(dist, n, allIndices(n), s.Byzantine)
	order := allIndices(n)
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] < scores[order[b]] })
	if !s.Multi {
		use := order[:1]
		return &Plan{Use: use, Combiner: copyCombiner{}, Shares: uniformShares(n, use)}, nil
	}
	keep := s.Keep
	if keep == 0 {
		keep = n - s.Byzantine
	}
	use := append([]int(nil), order[:keep]...)
	sort.Ints(use)
	return weightedPlan(weights, use)
}

type copyCombiner struct{}

func (copyCombiner) Combine(_ kernels.Backend, dst []float32, xs [][]float32) { copy(dst, xs[0]) }

// Bulyan is Bulyan (El Mhamdi et al., 2018) over Krum, as Flower's
// aggregate_bulyan: θ = n − 2f inputs are selected by applying Krum
// repeatedly, each time removing the pick from the candidates; then, at
// each coordinate, the β = θ − 2f selected values closest to the selected
// inputs' coordinate-wise median are averaged (ties by canonical order).
type Bulyan struct {
	Byzantine int // f, num_malicious
}

var _ Strategy = (*Bulyan)(nil)

// Name returns "bulyan".
func (*Bulyan) Name() string { return "bulyan" }

// Params returns num_malicious.
func (s *Bulyan) Params() map[string]float64 {
	return map[string]float64{"num_malicious": float64(s.Byzantine)}
}

// NeedsDistances returns true.
func (*Bulyan) NeedsDistances() bool { return true }

// Check requires n >= 4f + 3.
func (s *Bulyan) Check(n int) error {
	if err := checkAtLeast("bulyan", n, 1); err != nil {
		return err
	}
	if n < 4*s.Byzantine+3 {
		return fmt.Errorf("%w: bulyan with %d byzantine (--byzantine) needs at least 4f+3 = %d inputs, got %d", ErrBadParams, s.Byzantine, 4*s.Byzantine+3, n)
	}
	return nil
}

// Plan selects θ inputs by repeated Krum.
func (s *Bulyan) Plan(weights []float64, dist []float64) (*Plan, error) {
	n := len(weights)
	if err := s.Check(n); err != nil {
		return nil, err
	}
	if len(dist) != n*n {
		return nil, fmt.Errorf("%w: bulyan needs an %d×%d distance matrix", ErrBadParams, n, n)
	}
	theta := n - 2*s.Byzantine
	rem := allIndices(n)
	var use []int
	for range theta {
		scores := krumScores(dist, n, rem, s.Byzantine)
		best := 0
		for a := range scores {
			if scores[a] < scores[best] {
				best = a
			}
		}
		use = append(use, rem[best])
		rem = append(rem[:best], rem[best+1:]...)
	}
	sort.Ints(use)
	return &Plan{Use: use, Combiner: &bulyanCombiner{beta: theta - 2*s.Byzantine}, Shares: uniformShares(n, use)}, nil
}

type bulyanCombiner struct {
	beta int
	med  []float32
	job  kernels.Job // the parallel loop over spans, on kernels' worker pool
	// What the loop's Run reads, set for each Combine.
	dst  []float32
	xs   [][]float32
	idx  [][]int     // per participant slot: closestMean's index scratch
	dist [][]float64 // per participant slot: closestMean's distance scratch
}

// bulyanSpan is how many coordinates one participant takes at a time.
const bulyanSpan = 4096

func (c *bulyanCombiner) Combine(be kernels.Backend, dst []float32, xs [][]float32) {
	c.med = grow(c.med, len(dst))
	be.Median(c.med, xs)
	spans := (len(dst) + bulyanSpan - 1) / bulyanSpan
	helpers := min(runtime.GOMAXPROCS(0), spans) - 1
	for len(c.idx) <= helpers {
		c.idx, c.dist = append(c.idx, nil), append(c.dist, nil)
	}
	c.dst, c.xs = dst, xs
	c.job.For(spans, 1, helpers, c)
	c.dst, c.xs = nil, nil
}

// Run computes spans [lo, hi) of the Combine in progress as participant
// slot (kernels.Task); each coordinate depends on nothing but its inputs,
// so which participant runs which span never changes the result.
func (c *bulyanCombiner) Run(slot, lo, hi int) {
	if len(c.idx[slot]) != len(c.xs) {
		c.idx[slot], c.dist[slot] = make([]int, len(c.xs)), make([]float64, len(c.xs))
	}
	idx, dist := c.idx[slot], c.dist[slot]
	for s := lo; s < hi; s++ {
		for i := s * bulyanSpan; i < min((s+1)*bulyanSpan, len(c.dst)); i++ {
			c.dst[i] = closestMean(c.xs, i, float64(c.med[i]), c.beta, idx, dist)
		}
	}
}

// closestMean averages the beta values xs[*][i] closest to med (ties to the
// lower input index), summing them in input order in float64.
func closestMean(xs [][]float32, i int, med float64, beta int, idx []int, dist []float64) float32 {
	for k := range xs {
		dist[k] = math.Abs(float64(xs[k][i]) - med)
		idx[k] = k
	}
	// Insertion sort by (distance, index): the inputs are few.
	for a := 1; a < len(idx); a++ {
		for b := a; b > 0 && dist[idx[b]] < dist[idx[b-1]]; b-- {
			idx[b], idx[b-1] = idx[b-1], idx[b]
		}
	}
	chosen := idx[:beta]
	sort.Ints(chosen)
	var s float64
	for _, k := range chosen {
		s += float64(xs[k][i])
	}
	return float32(s / float64(beta))
}
