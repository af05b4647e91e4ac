package engine_test

import (
	"math"
	"runtime"
	"slices"
	"testing"

	"github.com/fedtune/fedtune/model"
)

// TestStepsIndependentOfCores trains the same model on Hosts made under
// different GOMAXPROCS (so that the Host splits products and row
// operations differently, or not at all) and requires bit-identical
// losses and weights: work is only ever split over independent outputs.
// The shapes are large enough for every split to happen.
func TestStepsIndependentOfCores(t *testing.T) {
	c := benchBaseConfig() // tiny.yaml: d=64, 2 layers
	m, err := model.New(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, lora := range []*model.LoRAConfig{
		nil,
		{Rank: 4, Alpha: 8, Dropout: 0.1, Targets: []string{"q_proj", "v_proj", "gate_proj"}},
	} {
		cfg := model.TrainConfig{LoRA: lora, Steps: 10, Batch: 4, SeqLen: 60, LR: 1e-3, ClipNorm: 1, Seed: 5}
		var ref []float32
		var refLoss []float64
		for _, procs := range []int{1, 2, 3} {
			prev := runtime.GOMAXPROCS(procs)
			tr := newTrainer(t, m, nil, cfg) // the Host reads GOMAXPROCS when made
			runtime.GOMAXPROCS(prev)
			var losses []float64
			for s := 0; s < 3; s++ {
				loss, err := tr.Step(batchOf(cfg.Batch, cfg.SeqLen, c.VocabSize, uint64(s)))
				if err != nil {
					t.Fatal(err)
				}
				losses = append(losses, loss)
			}
			var w []float32
			for _, name := range m.Names() {
				w = append(w, tr.Model().Tensors[name].Data...)
			}
			if lora != nil {
				ad := tr.Adapter()
				names := make([]string, 0, len(ad.Tensors))
				for name := range ad.Tensors {
					names = append(names, name)
				}
				slices.Sort(names)
				for _, name := range names {
					w = append(w, ad.Tensors[name].Data...)
				}
			}
			if ref == nil {
				ref, refLoss = w, losses
				continue
			}
			for s := range losses {
				if math.Float64bits(losses[s]) != math.Float64bits(refLoss[s]) {
					t.Errorf("lora=%v GOMAXPROCS=%d: step %d loss %.17g, with 1 core %.17g", lora != nil, procs, s+1, losses[s], refLoss[s])
				}
			}
			for i := range w {
				if math.Float32bits(w[i]) != math.Float32bits(ref[i]) {
					t.Fatalf("lora=%v GOMAXPROCS=%d: weight %d is %g, with 1 core %g", lora != nil, procs, i, w[i], ref[i])
				}
			}
		}
	}
}
