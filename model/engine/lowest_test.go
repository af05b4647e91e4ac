package engine_test

import (
	"math"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/gorgoniaref"
	"github.com/fedtune/fedtune/model/modeltest"
)

// TestLoRABottomBlockMatchesGorgonia covers the LoRA target sets for which
// backward stops early and skips input gradients at the lowest trainable
// block (only k, only o, only the MLP's gate and up, only down, with and
// without dropout): the losses and adapters after three steps must match
// gorgoniaref.Trainer's. It uses TestStepsMatchGorgonia's "linear" set-up
// (eps = 100, lr = 20), in which an update is about −g/5, so the adapters
// compared check the gradients' magnitudes too.
func TestLoRABottomBlockMatchesGorgonia(t *testing.T) {
	const B, T, steps = 2, 6, 3
	for i, targets := range [][]string{{"k_proj"}, {"o_proj"}, {"gate_proj", "up_proj"}, {"down_proj"}, {"q_proj", "up_proj"}} {
		for _, dropout := range []float64{0, 0.2} {
			name := strings.Join(targets, "+")
			if dropout > 0 {
				name += "/dropout"
			}
			t.Run(name, func(t *testing.T) {
				c := modeltest.TinyConfig()
				m := variantModel(t, c, uint64(300+i))
				cfg := model.TrainConfig{LoRA: &model.LoRAConfig{Rank: 2, Alpha: 4, Dropout: dropout, Targets: targets},
					Steps: 10, Batch: B, SeqLen: T, LR: 20, Eps: 100, Schedule: model.ScheduleConstant, Seed: uint64(i + 1)}
				ref, err := gorgoniaref.NewTrainerWithAdapter(m, nil, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer ref.Close()
				eng := newTrainer(t, m, nil, cfg)
				for s := 1; s <= steps; s++ {
					batch := batchOf(B, T, c.VocabSize, uint64(10*i+s))
					want, err := ref.Step(batch)
					if err != nil {
						t.Fatal(err)
					}
					got, err := eng.Step(batch)
					if err != nil {
						t.Fatal(err)
					}
					if d := math.Abs(got-want) / math.Abs(want); d > 1e-4 {
						t.Errorf("step %d: loss %.7g, gorgoniaref.Trainer %.7g (relative difference %.3g > 1e-4)", s, got, want, d)
					}
					wp, gp := ref.Adapter().Tensors, eng.Adapter().Tensors
					if len(wp) != len(gp) || len(wp) == 0 {
						t.Fatalf("step %d: %d adapter tensors, gorgoniaref.Trainer has %d", s, len(gp), len(wp))
					}
					for name, w := range wp {
						g := gp[name]
						if g == nil {
							t.Fatalf("step %d: tensor %s missing", s, name)
						}
						if d := relDiff(g.Data, w.Data); d > 1e-4 {
							t.Errorf("step %d: %s differs from gorgoniaref.Trainer's by %.3g relative (> 1e-4)", s, name, d)
						}
					}
				}
			})
		}
	}
}
