package inference

import (
	"context"
	"errors"
	"sync"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
)

// Params are the sampling parameters of one request, as a Generator and a
// receipt see them.
type Params struct {
	MaxTokens   int     `json:"max_tokens"`  // new tokens at most (> 0)
	Temperature float64 `json:"temperature"` // 0 = greedy
	TopP        float64 `json:"top_p"`       // nucleus threshold in (0, 1]
	Seed        uint64  `json:"seed"`        // the sampling stream's seed
	StopTokens  []int   `json:"stop_tokens"` // token ids that end the answer (not emitted)
}

// Generator continues prompts with one model. Implementations are safe for
// concurrent use.
type Generator interface {
	// Generate continues prompt, handing each new token to yield as soon
	// as it is sampled. It returns nil when it stops at p.MaxTokens, at a
	// stop token, when the context is full, or when yield returns false;
	// ctx.Err() when ctx ends first.
	Generate(ctx context.Context, prompt []int, p Params, yield func(tok int) bool) error
	// Close frees the generator's resources; the caller ensures no
	// Generate call runs.
	Close() error
}

// EngineGenerator is a Generator on model/engine's forward pass (Runner):
// the weights are uploaded once, and concurrent requests take turns token
// by token on the one Runner. Its samples are model.Generate's for the
// same prompt and parameters.
type EngineGenerator struct {
	cfg model.Config
	mu  sync.Mutex // guards r
	r   *engine.Runner
}

// NewEngineGenerator uploads m's weights to dev.
func NewEngineGenerator(dev engine.Device, m *model.Model) (*EngineGenerator, error) {
	r, err := engine.NewRunner(dev, m)
	if err != nil {
		return nil, err
	}
	return &EngineGenerator{cfg: m.Config, r: r}, nil
}

// Logits is the Runner's Logits, one caller at a time.
func (g *EngineGenerator) Logits(tokens []int) ([]float32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.r == nil {
		return nil, errClosed
	}
	return g.r.Logits(tokens)
}

var errClosed = errors.New("inference: generator closed")

// Generate implements Generator with model.Generate, handing each token
// on as soon as it is sampled (when Generate asks for the next step's
// logits, or returns).
func (g *EngineGenerator) Generate(ctx context.Context, prompt []int, p Params, yield func(tok int) bool) error {
	w := &watcher{g: g, n: len(prompt), yield: yield}
	out, err := model.Generate(ctx, &g.cfg, w, prompt, model.GenerateConfig{
		MaxTokens: p.MaxTokens, Temperature: p.Temperature, TopP: p.TopP, Seed: p.Seed, Stop: p.StopTokens})
	if errors.Is(err, errStopped) {
		return nil
	}
	if w.n-len(prompt) < len(out) && !w.stopped {
		yield(out[len(out)-1]) // the last token: no further step asked for
	}
	return err
}

// errStopped ends a generation whose yield returned false.
var errStopped = errors.New("inference: stopped by the caller")

// watcher is the forward pass model.Generate runs: each step's sequence
// is the previous one and the token just sampled, which it yields before
// running the step.
type watcher struct {
	g       *EngineGenerator
	n       int // tokens of the sequence already seen
	yield   func(tok int) bool
	stopped bool
}

func (w *watcher) Logits(seq []int) ([]float32, error) {
	for ; w.n < len(seq); w.n++ {
		if !w.yield(seq[w.n]) {
			w.stopped = true
			return nil, errStopped
		}
	}
	return w.g.Logits(seq)
}

// Close frees the Runner's device buffers.
func (g *EngineGenerator) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.r == nil {
		return nil
	}
	err := g.r.Close()
	g.r = nil
	return err
}
