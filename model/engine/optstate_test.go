package engine_test

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
)

// TestOptStateContinues: training 3 steps, reading the AdamW state back
// and giving it with the trained weights to a new Trainer for 3 more steps
// gives bit for bit the weights of 6 steps in one Trainer (constant
// learning rate); a new Trainer without the state does not. Bad state is
// refused, naming the parameter, and leaves the Trainer usable.
func TestOptStateContinues(t *testing.T) {
	c := benchBaseConfig()
	m, err := model.New(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	cfg := model.TrainConfig{Steps: 6, Batch: 2, SeqLen: 16, LR: 3e-3, ClipNorm: 1, WeightDecay: 0.01, Seed: 5, Schedule: "constant"}
	steps := func(tr interface {
		Step([][]int) (float64, error)
	}, from, to int) {
		for s := from; s < to; s++ {
			if _, err := tr.Step(batchOf(cfg.Batch, cfg.SeqLen, c.VocabSize, uint64(s))); err != nil {
				t.Fatal(err)
			}
		}
	}
	whole := newTrainer(t, m, nil, cfg)
	steps(whole, 0, 6)
	want := whole.Model()

	first := newTrainer(t, m, nil, cfg)
	steps(first, 0, 3)
	st, err := first.OptState()
	if err != nil {
		t.Fatal(err)
	}
	if st.Steps != 3 || len(st.M) != len(m.Tensors) || len(st.V) != len(m.Tensors) {
		t.Fatalf("state: %d steps, %d and %d moments; want 3 and %d", st.Steps, len(st.M), len(st.V), len(m.Tensors))
	}
	mid := first.Model()
	resumed := newTrainer(t, mid, nil, cfg)
	if err := resumed.SetOptState(st); err != nil {
		t.Fatal(err)
	}
	steps(resumed, 3, 6)
	fresh := newTrainer(t, mid, nil, cfg)
	steps(fresh, 3, 6)
	got, reset := resumed.Model(), fresh.Model()
	differs := false
	for _, name := range want.Names() {
		if !slices.Equal(got.Tensors[name].Data, want.Tensors[name].Data) {
			t.Fatalf("%s: resumed training differs from one run", name)
		}
		differs = differs || !slices.Equal(reset.Tensors[name].Data, want.Tensors[name].Data)
	}
	if !differs {
		t.Fatal("a fresh optimizer gives the same weights: the test cannot tell state from none")
	}
	if again, _ := resumed.OptState(); again.Steps != 6 {
		t.Fatalf("resumed state has %d steps, want 6", again.Steps)
	}

	name := m.Names()[0]
	for _, tc := range []struct {
		what string
		edit func(s *model.Tensor, st *optState)
		want string
	}{
		{"missing moment", func(_ *model.Tensor, st *optState) { delete(st.V, name) }, "moments for"},
		{"wrong shape", func(tn *model.Tensor, _ *optState) { tn.Shape = []int{len(tn.Data)} }, "has shape"},
		{"NaN", func(tn *model.Tensor, _ *optState) { tn.Data[1] = float32(math.NaN()) }, "element 1 is NaN"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			bad := cloneState(st)
			tc.edit(bad.M[name], bad)
			tr := newTrainer(t, mid, nil, cfg)
			err := tr.SetOptState(bad)
			if !errors.Is(err, model.ErrTrainConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			steps(tr, 3, 4) // still usable
		})
	}
	// Not after a step.
	if err := resumed.SetOptState(st); err == nil || !strings.Contains(err.Error(), "already taken 3 steps") {
		t.Fatalf("SetOptState after steps: %v", err)
	}
}

type optState = engine.OptState

func cloneState(s *optState) *optState {
	c := &optState{Steps: s.Steps, M: map[string]*model.Tensor{}, V: map[string]*model.Tensor{}}
	for k, tn := range s.M {
		c.M[k] = &model.Tensor{Shape: slices.Clone(tn.Shape), Data: slices.Clone(tn.Data)}
	}
	for k, tn := range s.V {
		c.V[k] = &model.Tensor{Shape: slices.Clone(tn.Shape), Data: slices.Clone(tn.Data)}
	}
	return c
}
