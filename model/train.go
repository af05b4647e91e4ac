package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// ErrTrainConfig is wrapped by errors about invalid training settings.
var ErrTrainConfig = errors.New("model: invalid training config")

// Learning-rate schedules.
const (
	ScheduleConstant = "constant"
	ScheduleCosine   = "cosine" // linear warmup, then cosine decay to zero
)

// TrainConfig holds the settings of one training run. Zero values take the
// defaults of DefaultTrainConfig where noted.
type TrainConfig struct {
	LoRA        *LoRAConfig // nil: full fine-tuning (or pre-training) of every weight
	Steps       int         // optimiser steps (needed by the cosine schedule)
	Batch       int         // windows per step
	SeqLen      int         // inputs per window (each window holds SeqLen+1 tokens)
	LR          float64
	WeightDecay float64 // decoupled (AdamW), applied to 2-D weights only
	ClipNorm    float64 // global gradient-norm bound; 0 disables clipping
	Beta1       float64 // default 0.9
	Beta2       float64 // default 0.999
	Eps         float64 // default 1e-8
	Warmup      int     // warmup steps of the cosine schedule
	Schedule    string  // ScheduleCosine or ScheduleConstant
	Seed        uint64  // adapter initialisation and dropout masks
	// Progress, if set, is called after every step.
	Progress func(step int, loss float64, tokPerSec float64)
}

// DefaultTrainConfig returns sensible settings for small models.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{Steps: 100, Batch: 8, SeqLen: 64, LR: 1e-3, WeightDecay: 0.0, ClipNorm: 1.0,
		Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Schedule: ScheduleCosine}
}

func (tc *TrainConfig) fill() {
	if tc.Beta1 == 0 {
		tc.Beta1 = 0.9
	}
	if tc.Beta2 == 0 {
		tc.Beta2 = 0.999
	}
	if tc.Eps == 0 {
		tc.Eps = 1e-8
	}
	if tc.Schedule == "" {
		tc.Schedule = ScheduleCosine
	}
}

// Validate checks the settings against model config c.
func (tc *TrainConfig) Validate(c *Config) error {
	var msgs []string
	if tc.Steps <= 0 {
		msgs = append(msgs, fmt.Sprintf("steps must be positive, got %d", tc.Steps))
	}
	if tc.Batch <= 0 {
		msgs = append(msgs, fmt.Sprintf("batch must be positive, got %d", tc.Batch))
	}
	if tc.SeqLen <= 0 || tc.SeqLen > c.MaxPositionEmbeddings {
		msgs = append(msgs, fmt.Sprintf("seq_len must be in [1, max_position_embeddings=%d], got %d", c.MaxPositionEmbeddings, tc.SeqLen))
	}
	if !(tc.LR > 0) || math.IsInf(tc.LR, 0) {
		msgs = append(msgs, fmt.Sprintf("lr must be positive, got %g", tc.LR))
	}
	if tc.WeightDecay < 0 || tc.ClipNorm < 0 || tc.Warmup < 0 {
		msgs = append(msgs, "weight_decay, clip_norm and warmup must not be negative")
	}
	if tc.Beta1 < 0 || tc.Beta1 >= 1 || tc.Beta2 < 0 || tc.Beta2 >= 1 || !(tc.Eps > 0) {
		msgs = append(msgs, "betas must be in [0, 1) and eps positive")
	}
	if tc.Schedule != ScheduleCosine && tc.Schedule != ScheduleConstant {
		msgs = append(msgs, fmt.Sprintf("schedule %q is not %q or %q", tc.Schedule, ScheduleCosine, ScheduleConstant))
	}
	if tc.LoRA != nil {
		if err := tc.LoRA.Validate(); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%w: %s", ErrTrainConfig, strings.Join(msgs, "; "))
	}
	return nil
}

// LRAt returns the learning rate of step (1-based).
func (tc *TrainConfig) LRAt(step int) float64 {
	if tc.Schedule == ScheduleConstant {
		return tc.LR
	}
	if step <= tc.Warmup {
		return tc.LR * float64(step) / float64(tc.Warmup)
	}
	span := tc.Steps - tc.Warmup
	if span <= 0 {
		return tc.LR
	}
	p := math.Min(1, float64(step-tc.Warmup)/float64(span))
	return tc.LR * 0.5 * (1 + math.Cos(math.Pi*p))
}

// Trainer runs optimisation steps on one model (not safe for concurrent
// use). It builds one Gorgonia graph and TapeMachine and reuses them for
// every step, so memory stays flat. Base weights are updated in place only in full fine-tuning; with
// LoRA they stay frozen and only the adapter changes.
type Trainer struct {
	cfg     TrainConfig
	model   *Model
	adapter *Adapter
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
func NewTrainer(m *Model, cfg TrainConfig) (*Trainer, error) {
	return NewTrainerWithAdapter(m, nil, cfg)
}

// NewTrainerWithAdapter is NewTrainer starting from adapter ad (which must
// match cfg.LoRA's rank and targets); ad == nil makes a fresh one.
func NewTrainerWithAdapter(m *Model, ad *Adapter, cfg TrainConfig) (*Trainer, error) {
	cfg.fill()
	if err := cfg.Validate(&m.Config); err != nil {
		return nil, err
	}
	if err := m.check("model"); err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, model: m, rng: rand.New(rand.NewPCG(cfg.Seed, 0x64726f706f7574))}
	sp := graphSpec{B: cfg.Batch, T: cfg.SeqLen, dt: tensor.Float32, full: cfg.LoRA == nil, dropout: true}
	if cfg.LoRA != nil {
		if ad == nil {
			var err error
			if ad, err = NewAdapter(m.Config, *cfg.LoRA, cfg.Seed); err != nil {
				return nil, err
			}
		} else {
			ad = &Adapter{Config: ad.Config, BaseModel: ad.BaseModel, Tensors: cloneTensors(ad.Tensors)}
			if ad.Config.Rank != cfg.LoRA.Rank || !slices.Equal(sortedCopy(ad.Config.Targets), sortedCopy(cfg.LoRA.Targets)) {
				return nil, fmt.Errorf("%w: adapter has r=%d targets %v, training asks r=%d targets %v",
					ErrTrainConfig, ad.Config.Rank, ad.Config.Targets, cfg.LoRA.Rank, cfg.LoRA.Targets)
			}
			ad.Config.Alpha, ad.Config.Dropout = cfg.LoRA.Alpha, cfg.LoRA.Dropout
			if err := ad.check(&m.Config, "adapter"); err != nil {
				return nil, err
			}
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

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func cloneTensors(ts map[string]*Tensor) map[string]*Tensor {
	out := make(map[string]*Tensor, len(ts))
	for k, t := range ts {
		out[k] = t.Clone()
	}
	return out
}

// Close releases the graph's machine.
func (t *Trainer) Close() { t.gr.close() }

// StepCount returns the number of steps taken.
func (t *Trainer) StepCount() int { return t.step }

// Step runs one optimisation step on batch (cfg.Batch windows of
// cfg.SeqLen+1 tokens) and returns the loss before the update.
func (t *Trainer) Step(batch [][]int) (float64, error) {
	start := time.Now()
	if err := t.gr.setBatch(batch); err != nil {
		return 0, err
	}
	for _, w := range sortedKeys(t.gr.maskT) { // sorted: the RNG stream must not depend on map order
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

// BatchSource yields batches (datasets.Batcher satisfies it).
type BatchSource interface {
	Next() [][]int
}

// Run takes steps until cfg.Steps have been taken or ctx is done, reading
// batches from src. It returns the mean loss of the last step.
func (t *Trainer) Run(ctx context.Context, src BatchSource) (float64, error) {
	return RunSteps(ctx, t, t.cfg.Steps, src)
}

// Stepper takes one optimisation step per batch (Trainer, and
// model/engine's Trainer).
type Stepper interface {
	Step(batch [][]int) (float64, error)
	StepCount() int
}

// RunSteps has s take steps, reading batches from src, until it has taken
// steps in all or ctx is done, and returns the loss of the last step.
func RunSteps(ctx context.Context, s Stepper, steps int, src BatchSource) (float64, error) {
	var loss float64
	for s.StepCount() < steps {
		if err := ctx.Err(); err != nil {
			return loss, err
		}
		b := src.Next()
		if b == nil {
			return loss, fmt.Errorf("model: batch source ran dry after %d steps", s.StepCount())
		}
		l, err := s.Step(b)
		if err != nil {
			return loss, err
		}
		loss = l
	}
	return loss, nil
}

// Adapter returns a copy of the adapter's current weights (LoRA only).
func (t *Trainer) Adapter() *Adapter {
	if t.adapter == nil {
		return nil
	}
	ad := &Adapter{Config: t.adapter.Config, BaseModel: t.adapter.BaseModel, Tensors: map[string]*Tensor{}}
	for i, p := range t.gr.params {
		name := t.gr.names[i]
		src := t.adapter.Tensors[name]
		dst := &Tensor{Shape: slices.Clone(src.Shape), Data: make([]float32, len(src.Data))}
		readBack(p.Value(), src.Shape, true, dst.Data)
		ad.Tensors[name] = dst
	}
	return ad
}

// Model returns a copy of the model with the current weights. With LoRA
// the base weights are those the trainer started from (frozen).
func (t *Trainer) Model() *Model {
	out := t.model.Clone()
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
