package gorgoniaref

import (
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
)

// benchConfigs are the BenchmarkLoRAStep sizes: the tiny test model and a
// small one (d=256, 4 layers) at 1,024 tokens a step.
var benchConfigs = []struct {
	name       string
	mod        func(*model.Config)
	batch, seq int
}{
	{"tiny", func(c *model.Config) {}, 8, 64},
	{"d256-4layer", func(c *model.Config) {
		c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 256, 688, 4
		c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 8, 4, 256
	}, 8, 128},
}

// benchBaseConfig is configs/models/tiny.yaml.
func benchBaseConfig() model.Config {
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 256, 64, 172, 2
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 4, 2, 128
	return c
}

// BenchmarkLoRAStep measures one LoRA training step (r=8 on q_proj and
// v_proj, AdamW) and reports tokens per second. scripts/bench-train.sh runs
// it beside a PyTorch step of the same model.
func BenchmarkLoRAStep(b *testing.B) {
	for _, bc := range benchConfigs {
		b.Run(bc.name, func(b *testing.B) {
			c := benchBaseConfig()
			bc.mod(&c)
			m, err := model.New(c, 1)
			if err != nil {
				b.Fatal(err)
			}
			tc := model.TrainConfig{LoRA: &model.LoRAConfig{Rank: 8, Alpha: 16, Targets: []string{"q_proj", "v_proj"}},
				Steps: 1 << 30, Batch: bc.batch, SeqLen: bc.seq, LR: 1e-3, ClipNorm: 1, Schedule: model.ScheduleConstant, Seed: 1}
			tr, err := NewTrainer(m, tc)
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			batch := make([][]int, bc.batch)
			for i := range batch {
				batch[i] = modeltest.IDs(bc.seq+1, c.VocabSize, uint64(i))
			}
			if _, err := tr.Step(batch); err != nil { // warm up
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := tr.Step(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*bc.batch*bc.seq)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
