package gorgoniaref

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/fedtune/fedtune/model"
)

// Trainer runs optimisation steps on one model (not safe for concurrent
// use). It builds one Gorgonia graph and TapeMachine and reuses them for
// every step, so memory stays flat. Base weights are updated in place only in full fine-tuning; with
// LoRA they stay frozen and only the adapter changes.
type Trainer struct {
	cfg     model.TrainConfig
	base    *model.Model
	adapter *model.Adapter
	gr      *graph
	step    int
	m, v    [][]float32 // AdamW moments per param
	decay   []bool
	rng     *rand.Rand // dropout masks
	tokens  int
}

// NewTrainer prepares training of m under cfg. With cfg.LoRA set it creates
// a fresh adapter (B zero, A seeded); see NewTrainerWithAdapter to continue
// training an existing one. m itself is not modified until Sync or a save.
func NewTrainer(m *model.Model, cfg model.TrainConfig) (*Trainer, error) {
	return NewTrainerWithAdapter(m, nil, cfg)
}

// NewTrainerWithAdapter is NewTrainer starting from adapter ad (which must
// match cfg.LoRA's rank and targets); ad == nil makes a fresh one.
func NewTrainerWithAdapter(m *model.Model, ad *model.Adapter, cfg model.TrainConfig) (*Trainer, error) {
	cfg.FillDefaults()
	if err := cfg.Validate(&m.Config); err != nil {
		return nil, err
	}
	if err := m.Check("model"); err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, base: m, rng: rand.New(rand.NewPCG(cfg.Seed, 0x64726f706f7574))}
	sp := graphSpec{B: cfg.Batch, T: cfg.SeqLen, dt: tensor.Float32, full: cfg.LoRA == nil, dropout: true}
	if cfg.LoRA != nil {
		var err error
		if ad, err = model.TrainingAdapter(m, ad, cfg); err != nil {
			return nil, err
		}
		t.adapter = ad
		sp.lora, sp.adapter = &ad.Config, ad
	}
	gr, err := buildGraph(m, sp)
	if err != nil {
		return nil, err
	}
	t.gr = gr
	for i, p := range gr.params {
		n := p.Shape().TotalSize()
		t.m = append(t.m, make([]float32, n))
		t.v = append(t.v, make([]float32, n))
		t.decay = append(t.decay, len(gr.paramShape(m, ad, i)) == 2)
	}
	return t, nil
}

// Close releases the graph's machine. It returns nil (the signature is
// model/engine's Trainer's).
func (t *Trainer) Close() error {
	t.gr.close()
	return nil
}

// StepCount returns the number of steps taken.
func (t *Trainer) StepCount() int { return t.step }

// Step runs one optimisation step on batch (cfg.Batch windows of
// cfg.SeqLen+1 tokens) and returns the loss before the update.
func (t *Trainer) Step(batch [][]int) (float64, error) {
	start := time.Now()
	if err := t.gr.setBatch(batch); err != nil {
		return 0, err
	}
	for _, w := range slices.Sorted(maps.Keys(t.gr.maskT)) { // sorted: the RNG stream must not depend on map order
		mt := t.gr.maskT[w]
		keep := 1 - t.cfg.LoRA.Dropout
		switch d := mt.Data().(type) {
		case []float32:
			for i := range d {
				d[i] = 0
				if t.rng.Float64() < keep {
					d[i] = float32(1 / keep)
				}
			}
		}
		if err := G.Let(t.gr.masks[w], mt); err != nil {
			return 0, err
		}
	}
	loss, err := t.gr.run()
	if err != nil {
		t.gr.vm.Reset()
		_ = t.gr.zeroGrads()
		return 0, err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		t.gr.vm.Reset()
		_ = t.gr.zeroGrads()
		return loss, fmt.Errorf("model: step %d: loss is %g", t.step+1, loss)
	}
	grads := make([][]float32, len(t.gr.params))
	var sq float64
	for i, p := range t.gr.params {
		g, err := p.Grad()
		if err != nil {
			t.gr.vm.Reset()
			return 0, fmt.Errorf("model: gradient of %s: %w", t.gr.names[i], err)
		}
		grads[i] = g.Data().([]float32)
		for _, x := range grads[i] {
			sq += float64(x) * float64(x)
		}
	}
	clip := 1.0
	if norm := math.Sqrt(sq); t.cfg.ClipNorm > 0 && norm > t.cfg.ClipNorm {
		clip = t.cfg.ClipNorm / (norm + 1e-6)
	}
	t.step++
	lr := t.cfg.LRAt(t.step)
	b1, b2 := t.cfg.Beta1, t.cfg.Beta2
	bc1 := 1 - math.Pow(b1, float64(t.step))
	bc2 := 1 - math.Pow(b2, float64(t.step))
	for i, p := range t.gr.params {
		w := p.Value().Data().([]float32)
		adamW(w, grads[i], t.m[i], t.v[i], float32(clip), float32(lr), float32(b1), float32(b2),
			float32(bc1), float32(bc2), float32(t.cfg.Eps), t.decay[i], float32(t.cfg.WeightDecay))
	}
	t.gr.vm.Reset()
	if err := t.gr.zeroGrads(); err != nil {
		return 0, err
	}
	t.tokens += t.cfg.Batch * t.cfg.SeqLen
	if t.cfg.Progress != nil {
		t.cfg.Progress(t.step, loss, float64(t.cfg.Batch*t.cfg.SeqLen)/time.Since(start).Seconds())
	}
	return loss, nil
}

// adamW applies one AdamW update (decoupled weight decay, as in PyTorch's
// torch.optim.AdamW) to w in place.
func adamW(w, g, m, v []float32, clip, lr, b1, b2, bc1, bc2, eps float32, decay bool, wd float32) {
	stepSize := lr / bc1
	sqrtBC2 := float32(math.Sqrt(float64(bc2)))
	for j := range w {
		gj := g[j] * clip
		m[j] = b1*m[j] + (1-b1)*gj
		v[j] = b2*v[j] + (1-b2)*gj*gj
		if decay {
			w[j] -= lr * wd * w[j]
		}
		den := float32(math.Sqrt(float64(v[j])))/sqrtBC2 + eps
		w[j] -= stepSize * m[j] / den
	}
}

// Run takes steps until cfg.Steps have been taken or ctx is done, reading
// batches from src. It returns the mean loss of the last step.
func (t *Trainer) Run(ctx context.Context, src model.BatchSource) (float64, error) {
	return model.RunSteps(ctx, t, t.cfg.Steps, src)
}

// Adapter returns a copy of the adapter's current weights (LoRA only).
func (t *Trainer) Adapter() *model.Adapter {
	if t.adapter == nil {
		return nil
	}
	ad := &model.Adapter{Config: t.adapter.Config, BaseModel: t.adapter.BaseModel, Tensors: map[string]*model.Tensor{}}
	for i, p := range t.gr.params {
		name := t.gr.names[i]
		src := t.adapter.Tensors[name]
		dst := &model.Tensor{Shape: slices.Clone(src.Shape), Data: make([]float32, len(src.Data))}
		readBack(p.Value(), src.Shape, true, dst.Data)
		ad.Tensors[name] = dst
	}
	return ad
}

// Model returns a copy of the model with the current weights. With LoRA
// the base weights are those the trainer started from (frozen).
func (t *Trainer) Model() *model.Model {
	out := t.base.Clone()
	if t.adapter != nil {
		return out
	}
	for i, p := range t.gr.params {
		name := t.gr.names[i]
		dst := out.Tensors[name]
		readBack(p.Value(), dst.Shape, transposedInGraph(name, dst.Shape), dst.Data)
	}
	return out
}

// Tokens returns the number of input tokens trained on so far.
func (t *Trainer) Tokens() int { return t.tokens }
