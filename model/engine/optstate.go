package engine

import (
	"fmt"
	"math"
	"slices"

	"github.com/fedtune/fedtune/model"
)

// OptState is the AdamW state of a Trainer's trainable parameters: the
// first and second moments (PyTorch's exp_avg and exp_avg_sq) by
// parameter name, and the updates they have seen. DiLoCo keeps each
// worker's inner optimizer state from one round to the next; a trainer
// saves it after a round (Trainer.OptState) and gives it to the next
// round's Trainer (Trainer.SetOptState).
type OptState struct {
	// Steps is how many AdamW updates the moments have taken; bias
	// correction goes on from it (the learning-rate schedule does not:
	// it counts the steps of the Trainer's own run).
	Steps int
	// M and V are the moments, with the parameters' names and shapes.
	M, V map[string]*model.Tensor
}

// OptState returns a copy of the AdamW state read back from the device
// (nil and the reason after Close or a failed step).
func (t *Trainer) OptState() (*OptState, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	s := &OptState{Steps: t.optBase + t.step, M: map[string]*model.Tensor{}, V: map[string]*model.Tensor{}}
	for _, p := range t.params {
		s.M[p.name] = t.download(p.m, p.shape)
		s.V[p.name] = t.download(p.v, p.shape)
	}
	if err := t.dev.Sync(); err != nil {
		t.err = t.deviceErr("read optimizer state", err)
		return nil, t.err
	}
	return s, nil
}

// SetOptState loads AdamW state into a Trainer that has not stepped yet.
// It must hold exactly the trainable parameters, with their shapes, every
// value finite and every second moment non-negative; otherwise nothing
// changes and the error says what differs.
func (t *Trainer) SetOptState(s *OptState) error {
	if err := t.usable(); err != nil {
		return err
	}
	if t.step != 0 {
		return fmt.Errorf("%w: optimizer state: the trainer has already taken %d steps", model.ErrTrainConfig, t.step)
	}
	if s == nil || s.Steps < 0 {
		return fmt.Errorf("%w: optimizer state: no state, or a negative step count", model.ErrTrainConfig)
	}
	if len(s.M) != len(t.params) || len(s.V) != len(t.params) {
		return fmt.Errorf("%w: optimizer state: %d first and %d second moments for %d trainable parameters", model.ErrTrainConfig, len(s.M), len(s.V), len(t.params))
	}
	for _, p := range t.params {
		for _, mv := range []struct {
			what string
			tn   *model.Tensor
		}{{"exp_avg", s.M[p.name]}, {"exp_avg_sq", s.V[p.name]}} {
			if mv.tn == nil {
				return fmt.Errorf("%w: optimizer state: no %s for parameter %s", model.ErrTrainConfig, mv.what, p.name)
			}
			if !slices.Equal(mv.tn.Shape, p.shape) || len(mv.tn.Data) != prod(p.shape) {
				return fmt.Errorf("%w: optimizer state: %s of %s has shape %v, the parameter %v", model.ErrTrainConfig, mv.what, p.name, mv.tn.Shape, p.shape)
			}
			for i, x := range mv.tn.Data {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) || (mv.what == "exp_avg_sq" && x < 0) {
					return fmt.Errorf("%w: optimizer state: %s of %s: element %d is %v", model.ErrTrainConfig, mv.what, p.name, i, x)
				}
			}
		}
	}
	for _, p := range t.params {
		t.dev.Write(p.m, 0, s.M[p.name].Data)
		t.dev.Write(p.v, 0, s.V[p.name].Data)
	}
	if err := t.dev.Sync(); err != nil {
		t.err = t.deviceErr("write optimizer state", err)
		return t.err
	}
	t.optBase = s.Steps
	return nil
}
