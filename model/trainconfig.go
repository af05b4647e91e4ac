package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
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

// FillDefaults sets the optimiser settings left zero to
// DefaultTrainConfig's: Beta1, Beta2, Eps and Schedule.
func (tc *TrainConfig) FillDefaults() {
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

// BatchSource yields batches (datasets.Batcher satisfies it).
type BatchSource interface {
	Next() [][]int
}

// Stepper takes one optimisation step per batch (model/engine's Trainer, and
// model/gorgoniaref's).
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

// TrainingAdapter returns the adapter a LoRA run under cfg starts from: a
// fresh one (NewAdapter with cfg.Seed) when ad is nil, else a private copy
// of ad that must match cfg.LoRA's rank and targets, takes cfg.LoRA's alpha
// and dropout, and is checked against m's config. Both training steps
// (model/engine's and model/gorgoniaref's) begin here.
func TrainingAdapter(m *Model, ad *Adapter, cfg TrainConfig) (*Adapter, error) {
	if cfg.LoRA == nil {
		return nil, fmt.Errorf("%w: no LoRA settings", ErrTrainConfig)
	}
	if ad == nil {
		return NewAdapter(m.Config, *cfg.LoRA, cfg.Seed)
	}
	cp := &Adapter{Config: ad.Config, BaseModel: ad.BaseModel, Tensors: make(map[string]*Tensor, len(ad.Tensors))}
	cp.Config.Targets = slices.Clone(ad.Config.Targets)
	for k, t := range ad.Tensors {
		cp.Tensors[k] = t.Clone()
	}
	sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	if cp.Config.Rank != cfg.LoRA.Rank || !slices.Equal(sorted(cp.Config.Targets), sorted(cfg.LoRA.Targets)) {
		return nil, fmt.Errorf("%w: adapter has r=%d targets %v, training asks r=%d targets %v",
			ErrTrainConfig, cp.Config.Rank, cp.Config.Targets, cfg.LoRA.Rank, cfg.LoRA.Targets)
	}
	cp.Config.Alpha, cp.Config.Dropout = cfg.LoRA.Alpha, cfg.LoRA.Dropout
	if err := cp.Check(&m.Config, "adapter"); err != nil {
		return nil, err
	}
	return cp, nil
}
