package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedtune/fedtune/model"
)

// Runner runs the training step's forward pass for inference on a Device:
// the model's weights are uploaded once, and each Logits call runs one
// sequence through the same forward a training step runs (without dropout),
// with activations sized to that sequence. It keeps no key/value cache, so
// generating a token runs the whole sequence again. A Runner is not safe
// for concurrent use; the caller keeps ownership of the device.
type Runner struct {
	dev     Device
	m       *model.Model
	weights map[string]Buffer
	state   *Trainer // activations for the last sequence length
	err     error
}

var _ model.Forwarder = (*Runner)(nil)

// NewRunner uploads m's weights to dev (those held as bfloat16, from
// model.LoadBF16, stay so on a BF16Device).
func NewRunner(dev Device, m *model.Model) (*Runner, error) {
	if err := checkModel(m); err != nil {
		return nil, err
	}
	if c := m.Config; c.NumAttentionHeads%c.KVHeads() != 0 {
		return nil, fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", model.ErrConfig, c.NumAttentionHeads, c.KVHeads())
	}
	r := &Runner{dev: dev, m: m, weights: make(map[string]Buffer, len(m.Tensors))}
	for _, name := range m.Names() {
		r.weights[name] = uploadWeight(dev, m.Tensors[name], true, dev.Alloc)
	}
	if err := dev.Sync(); err != nil {
		r.Close()
		return nil, fmt.Errorf("engine: upload to %s: %w", dev.Name(), err)
	}
	return r, nil
}

// stateFor returns forward activations for sequences of T tokens.
func (r *Runner) stateFor(T int) (*Trainer, error) {
	if r.state != nil && r.state.nT == T {
		return r.state, nil
	}
	if r.state != nil {
		r.state.free()
		r.state = nil
	}
	c := r.m.Config
	t := &Trainer{dev: r.dev, base: r.m, c: c, cfg: model.TrainConfig{Batch: 1, SeqLen: T},
		nB: 1, nT: T, nN: T, d: c.HiddenSize, nH: c.NumAttentionHeads, nKV: c.KVHeads(), hd: c.HeadDimension(),
		nI: c.IntermediateSize, nV: c.VocabSize, nL: c.NumHiddenLayers, weights: r.weights,
		grads: map[string]Buffer{}, lora: map[string]*adapted{}, ltmp: map[int]Buffer{}, forwardOnly: true}
	t.alpha = float32(1 / math.Sqrt(float64(t.hd)))
	for l := 0; l < t.nL; l++ {
		t.names = append(t.names, namesOf(l))
	}
	if err := t.allocActs(); err != nil {
		t.free()
		return nil, err
	}
	r.state = t
	return t, nil
}

// Logits runs tokens (at most max_position_embeddings of them) through the
// model and returns the logits [len(tokens), V], row i scoring the token
// that follows tokens[i].
func (r *Runner) Logits(tokens []int) ([]float32, error) {
	if r.err != nil {
		return nil, r.err
	}
	if len(tokens) == 0 {
		return nil, nil
	}
	if n, L := len(tokens), r.m.Config.MaxPositionEmbeddings; n > L {
		return nil, fmt.Errorf("%w: %d tokens > %d", model.ErrContextFull, n, L)
	}
	t, err := r.stateFor(len(tokens))
	if err != nil {
		r.err = err
		return nil, err
	}
	out, err := t.Forward([][]int{tokens})
	if err != nil && errors.Is(err, ErrDevice) {
		r.err = err
	}
	return out, err
}

// Close frees the runner's device buffers (not the device) and reports a
// device error still pending.
func (r *Runner) Close() error {
	if r.state != nil {
		r.state.free()
		r.state = nil
	}
	for _, w := range r.weights {
		r.dev.Free(w)
	}
	r.weights = nil
	return r.dev.Sync()
}

// Evaluate is model.Evaluate on the engine's forward pass on dev: the mean
// negative log-likelihood of a token stream over non-overlapping windows
// of max_position_embeddings tokens.
func Evaluate(ctx context.Context, dev Device, m *model.Model, tokens []int, progress func(done, total int)) (model.EvalResult, error) {
	r, err := NewRunner(dev, m)
	if err != nil {
		return model.EvalResult{}, err
	}
	res, err := model.Evaluate(ctx, &m.Config, r, tokens, progress)
	return res, errors.Join(err, r.Close())
}

// Generate is model.Generate on the engine on dev: it continues prompt
// and returns the new token ids, with the same stopping rules and the
// same sampler. On a CacheDevice (the Host) it prefills the prompt into a
// Decoder's key/value cache in one pass and then runs one token per step;
// on other devices each new token runs the whole sequence through a
// Runner again.
func Generate(ctx context.Context, dev Device, m *model.Model, prompt []int, gc model.GenerateConfig) ([]int, error) {
	cd, ok := dev.(CacheDevice)
	if !ok {
		return generateFull(ctx, dev, m, prompt, gc)
	}
	if len(prompt) == 0 {
		return nil, fmt.Errorf("model: generate: empty prompt")
	}
	if err := gc.Validate(); err != nil {
		return nil, err
	}
	L := m.Config.MaxPositionEmbeddings
	if len(prompt) > L {
		return nil, fmt.Errorf("%w: prompt is %d tokens, max_position_embeddings is %d", model.ErrContextFull, len(prompt), L)
	}
	if gc.MaxTokens == 0 {
		return nil, nil
	}
	// The cache holds the prompt and every generated token fed back.
	dec, err := NewDecoder(cd, m, 1, min(L, len(prompt)+gc.MaxTokens-1))
	if err != nil {
		return nil, err
	}
	out, err := generateCached(ctx, dec, prompt, gc)
	return out, errors.Join(err, dec.Close())
}

// generateCached is Generate's loop on slot 0 of dec, which must be empty
// and hold min(max_position_embeddings, len(prompt)+MaxTokens−1)
// positions.
func generateCached(ctx context.Context, dec *Decoder, prompt []int, gc model.GenerateConfig) ([]int, error) {
	smp := model.NewSampler(gc)
	L := dec.c.MaxPositionEmbeddings
	var out []int
	feed := prompt
	for len(out) < gc.MaxTokens {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		logits, err := dec.Forward(chunkOf(0, feed))
		if err != nil {
			return out, err
		}
		next := smp.Next(logits)
		if slices.Contains(gc.Stop, next) {
			return out, nil
		}
		out = append(out, next)
		if len(prompt)+len(out)-1 >= L {
			break // the context is full
		}
		feed = []int{next}
	}
	return out, nil
}

// generateFull is model.Generate on a Runner: every new token runs the
// whole sequence again.
func generateFull(ctx context.Context, dev Device, m *model.Model, prompt []int, gc model.GenerateConfig) ([]int, error) {
	r, err := NewRunner(dev, m)
	if err != nil {
		return nil, err
	}
	out, err := model.Generate(ctx, &m.Config, r, prompt, gc)
	return out, errors.Join(err, r.Close())
}
