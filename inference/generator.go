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

// config returns p as model.GenerateConfig.
func (p Params) config() model.GenerateConfig {
	return model.GenerateConfig{MaxTokens: p.MaxTokens, Temperature: p.Temperature, TopP: p.TopP, Seed: p.Seed, Stop: p.StopTokens}
}

// BatcherGenerator is a Generator on model/engine's Batcher: a key/value
// cache, and the requests running at once decoded together, joining and
// leaving the batch between steps (continuous batching). Its tokens are
// model.Generate's for the same prompt and parameters.
type BatcherGenerator struct{ b *engine.Batcher }

// NewBatcherGenerator uploads m to dev and starts a Batcher under cfg.
func NewBatcherGenerator(dev engine.CacheDevice, m *model.Model, cfg engine.BatcherConfig) (*BatcherGenerator, error) {
	b, err := engine.NewBatcher(dev, m, cfg)
	if err != nil {
		return nil, err
	}
	return &BatcherGenerator{b}, nil
}

// Generate implements Generator with Batcher.Generate: a request stopped
// by yield or ctx leaves the batch, freeing its slot, at the next step.
func (g *BatcherGenerator) Generate(ctx context.Context, prompt []int, p Params, yield func(tok int) bool) error {
	return g.b.Generate(ctx, prompt, p.config(), yield)
}

// Context is the most tokens (prompt and answer) a request may hold.
func (g *BatcherGenerator) Context() int { return g.b.Config().MaxContext }

// Stats returns the Batcher's counters (slots in use, queue, steps).
func (g *BatcherGenerator) Stats() engine.BatcherStats { return g.b.Stats() }

// Close lets the requests running finish and frees the Batcher.
func (g *BatcherGenerator) Close() error { return g.b.Close() }

// EngineGenerator is a Generator on model/engine's forward pass (Runner),
// for a device without the key/value cache operations: the weights are
// uploaded once, each token runs the whole sequence again, and concurrent
// requests take turns token by token on the one Runner. Its samples are
// model.Generate's for the same prompt and parameters.
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

// Generate implements Generator with model.GenerateStream.
func (g *EngineGenerator) Generate(ctx context.Context, prompt []int, p Params, yield func(tok int) bool) error {
	return model.GenerateStream(ctx, &g.cfg, g, prompt, p.config(), yield)
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
