package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// ErrContextFull is returned when a sequence would exceed
// max_position_embeddings.
var ErrContextFull = errors.New("model: sequence longer than max_position_embeddings")

// Forwarder is a forward pass for inference (model/engine's Runner).
type Forwarder interface {
	// Logits runs a sequence of at most max_position_embeddings tokens
	// and returns its logits [len(tokens), V], row i scoring the token
	// that follows tokens[i].
	Logits(tokens []int) ([]float32, error)
}

// logSoftmaxAt returns log p(target) from one row of logits.
func logSoftmaxAt(logits []float32, target int) float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - mx)
	}
	return float64(logits[target]) - mx - math.Log(z)
}

// EvalResult is the outcome of Evaluate.
type EvalResult struct {
	Tokens     int     `json:"tokens"`     // predicted tokens
	MeanNLL    float64 `json:"mean_nll"`   // nats per predicted token
	Perplexity float64 `json:"perplexity"` // exp(MeanNLL)
}

// Evaluate scores a token stream with forward pass f of a model with
// config c: the stream is cut into non-overlapping windows of
// max_position_embeddings tokens (a final shorter window of at least two
// tokens counts), each window is run on its own, and token t+1 of a window
// is predicted from tokens 0..t. progress, if set, is called after each
// window with the tokens predicted so far. model/engine's Evaluate runs it
// on a device.
func Evaluate(ctx context.Context, c *Config, f Forwarder, tokens []int, progress func(done, total int)) (EvalResult, error) {
	L := c.MaxPositionEmbeddings
	V := c.VocabSize
	var sum float64
	var count int
	total := 0
	for s := 0; s < len(tokens); s += L {
		if e := min(s+L, len(tokens)); e-s >= 2 {
			total += e - s - 1
		}
	}
	for s := 0; s < len(tokens); s += L {
		if err := ctx.Err(); err != nil {
			return EvalResult{}, err
		}
		w := tokens[s:min(s+L, len(tokens))]
		if len(w) < 2 {
			break
		}
		logits, err := f.Logits(w[:len(w)-1])
		if err != nil {
			return EvalResult{}, err
		}
		for i := 0; i < len(w)-1; i++ {
			sum -= logSoftmaxAt(logits[i*V:(i+1)*V], w[i+1])
		}
		count += len(w) - 1
		if progress != nil {
			progress(count, total)
		}
	}
	if count == 0 {
		return EvalResult{}, fmt.Errorf("model: evaluate: need at least 2 tokens, got %d", len(tokens))
	}
	mean := sum / float64(count)
	return EvalResult{Tokens: count, MeanNLL: mean, Perplexity: math.Exp(mean)}, nil
}

// GenerateConfig controls sampling.
type GenerateConfig struct {
	MaxTokens   int     // new tokens to produce at most
	Temperature float64 // 0 = greedy
	TopP        float64 // nucleus sampling threshold in (0, 1]; 0 means 1
	Seed        uint64
	Stop        []int // token ids that end generation (not emitted)
}

// Validate checks the sampling settings: temperature >= 0, top_p in
// [0, 1] (0 means 1), max_tokens >= 0.
func (gc *GenerateConfig) Validate() error {
	if !(gc.Temperature >= 0) || !(gc.TopP >= 0) || gc.TopP > 1 || gc.MaxTokens < 0 {
		return fmt.Errorf("model: generate: need temperature >= 0, top_p in (0, 1], max_tokens >= 0")
	}
	return nil
}

// Sampler draws the tokens of one generation from successive rows of
// logits, as Generate does: argmax at temperature 0, else a draw from the
// softmax at the temperature restricted to the smallest set of tokens
// with mass >= top_p, from a random stream seeded by the config's Seed
// alone. The same config and the same logits give the same tokens,
// whichever forward pass (model/engine's Runner, Decoder or Batcher)
// produced them.
type Sampler struct {
	temp, topP float64
	rng        *rand.Rand
	cs         []cand
}

// NewSampler returns the sampler of one generation under gc.
func NewSampler(gc GenerateConfig) *Sampler {
	return &Sampler{temp: gc.Temperature, topP: gc.TopP, rng: rand.New(rand.NewPCG(gc.Seed, 0x67656e))}
}

// Next draws the next token from one row of logits [V].
func (s *Sampler) Next(logits []float32) int {
	return sample(logits, s.temp, s.topP, s.rng, &s.cs)
}

// Generate continues prompt with forward pass f of a model with config c
// and returns the new token ids. It stops at MaxTokens, at a Stop token, or
// when the context is full. Each new token runs the whole sequence through
// f again. model/engine's Generate runs it on a device.
func Generate(ctx context.Context, c *Config, f Forwarder, prompt []int, gc GenerateConfig) ([]int, error) {
	var out []int
	err := GenerateStream(ctx, c, f, prompt, gc, func(tok int) bool {
		out = append(out, tok)
		return true
	})
	return out, err
}

// GenerateStream is Generate handing each new token to yield as soon as it
// is sampled; it stops early, with no error, when yield returns false. The
// tokens are those Generate returns for the same arguments.
func GenerateStream(ctx context.Context, c *Config, f Forwarder, prompt []int, gc GenerateConfig, yield func(tok int) bool) error {
	if len(prompt) == 0 {
		return fmt.Errorf("model: generate: empty prompt")
	}
	if err := gc.Validate(); err != nil {
		return err
	}
	L := c.MaxPositionEmbeddings
	if len(prompt) > L {
		return fmt.Errorf("%w: prompt is %d tokens, max_position_embeddings is %d", ErrContextFull, len(prompt), L)
	}
	smp := NewSampler(gc)
	V := c.VocabSize
	seq := slices.Clone(prompt)
	for n := 0; n < gc.MaxTokens; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		logits, err := f.Logits(seq)
		if err != nil {
			return err
		}
		next := smp.Next(logits[(len(seq)-1)*V : len(seq)*V])
		if slices.Contains(gc.Stop, next) {
			return nil
		}
		if !yield(next) {
			return nil
		}
		if len(seq) >= L {
			break
		}
		seq = append(seq, next)
	}
	return nil
}

// cand is a token and its probability, for sample.
type cand struct {
	id int
	p  float64
}

// sample draws a token from logits: argmax at temperature 0, else softmax
// at temperature restricted to the smallest set with mass >= topP. buf is
// scratch space kept between calls.
func sample(logits []float32, temp, topP float64, rng *rand.Rand, buf *[]cand) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if temp == 0 {
		return best
	}
	if topP == 0 {
		topP = 1
	}
	if cap(*buf) < len(logits) {
		*buf = make([]cand, len(logits))
	}
	cs := (*buf)[:len(logits)]
	var z float64
	for i, v := range logits {
		p := math.Exp((float64(v) - float64(logits[best])) / temp)
		cs[i] = cand{i, p}
		z += p
	}
	// Descending probability, ties in increasing id: the order a stable
	// sort by probability gives.
	slices.SortFunc(cs, func(a, b cand) int {
		switch {
		case a.p > b.p:
			return -1
		case a.p < b.p:
			return 1
		}
		return a.id - b.id
	})
	var mass float64
	cut := len(cs)
	for i := range cs {
		cs[i].p /= z
		mass += cs[i].p
		if mass >= topP {
			cut = i + 1
			break
		}
	}
	cs = cs[:cut]
	u := rng.Float64() * mass
	for _, c := range cs {
		u -= c.p
		if u < 0 {
			return c.id
		}
	}
	return cs[len(cs)-1].id
}
