package engine

import (
	"runtime/debug"
	"testing"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
)

// TestStepAllocatesNothing: after warm-up a training step on Host
// allocates nothing (LoRA with dropout, and full fine-tuning), at sizes at
// which the Host spreads work over its pool.
func TestStepAllocatesNothing(t *testing.T) {
	if fedtest.RaceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	if _, serial := (&host{}).gemm(); !serial {
		t.Skip("gonum's pure-Go sgemm (no AVX2) allocates")
	}
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 256, 64, 172, 2
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 4, 2, 128
	m, err := model.New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, lora := range []*model.LoRAConfig{nil, {Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{"q_proj", "v_proj"}}} {
		cfg := model.TrainConfig{LoRA: lora, Steps: 100, Batch: 4, SeqLen: 64, LR: 1e-3, ClipNorm: 1, Seed: 1}
		tr, err := NewTrainer(NewHost(), m, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		batch := make([][]int, cfg.Batch)
		for b := range batch {
			for p := 0; p <= cfg.SeqLen; p++ {
				batch[b] = append(batch[b], (b*31+p*7)%c.VocabSize)
			}
		}
		step := func() {
			if _, err := tr.Step(batch); err != nil {
				t.Fatal(err)
			}
		}
		step()
		// A collection empties gemmPool (a sync.Pool), and its refill is an
		// allocation the step itself does not make: measure with the
		// collector off so a loaded machine's GC timing cannot fail this.
		old := debug.SetGCPercent(-1)
		n := testing.AllocsPerRun(5, step)
		debug.SetGCPercent(old)
		if n != 0 {
			t.Errorf("lora=%v: a step allocates %g times", lora != nil, n)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
