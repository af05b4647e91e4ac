package engine_test

import (
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/gorgoniaref"
)

// benchCases are the step benchmark shapes: model's BenchmarkLoRAStep sizes
// (tiny.yaml at 512 tokens a step; d=256, 4 layers at 1,024 tokens a step)
// with LoRA r=8 on q_proj and v_proj, and tiny.yaml fully fine-tuned.
var benchCases = []struct {
	name       string
	mod        func(*model.Config)
	batch, seq int
	lora       bool
}{
	{"tiny-lora", func(c *model.Config) {}, 8, 64, true},
	{"d256-4layer-lora", func(c *model.Config) {
		c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 256, 688, 4
		c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 8, 4, 256
	}, 8, 128, true},
	{"tiny-full", func(c *model.Config) {}, 8, 64, false},
}

// benchBaseConfig is configs/models/tiny.yaml.
func benchBaseConfig() model.Config {
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 256, 64, 172, 2
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 4, 2, 128
	return c
}

// stepper is what both trainers offer.
type stepper interface {
	Step([][]int) (float64, error)
}

// benchSteps runs one benchmark per case with the trainer mk builds and
// reports tokens per second.
func benchSteps(b *testing.B, mk func(b *testing.B, m *model.Model, cfg model.TrainConfig) stepper) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			c := benchBaseConfig()
			bc.mod(&c)
			m, err := model.New(c, 1)
			if err != nil {
				b.Fatal(err)
			}
			cfg := model.TrainConfig{Steps: 1 << 30, Batch: bc.batch, SeqLen: bc.seq, LR: 1e-3, ClipNorm: 1,
				Schedule: model.ScheduleConstant, Seed: 1}
			if bc.lora {
				cfg.LoRA = &model.LoRAConfig{Rank: 8, Alpha: 16, Targets: []string{"q_proj", "v_proj"}}
			}
			tr := mk(b, m, cfg)
			batch := batchOf(bc.batch, bc.seq, c.VocabSize, 1)
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

// BenchmarkStepHost measures the engine's training step on the Host
// device. Compare with BenchmarkStepGorgonia (same cases, same names):
//
//	go test -run '^$' -bench 'BenchmarkStep' -benchtime 10x ./model/engine/
func BenchmarkStepHost(b *testing.B) {
	benchSteps(b, func(b *testing.B, m *model.Model, cfg model.TrainConfig) stepper {
		return newTrainer(b, m, nil, cfg)
	})
}

// BenchmarkStepGorgonia measures gorgoniaref.Trainer (Gorgonia) on the same cases.
func BenchmarkStepGorgonia(b *testing.B) {
	benchSteps(b, func(b *testing.B, m *model.Model, cfg model.TrainConfig) stepper {
		tr, err := gorgoniaref.NewTrainer(m, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { tr.Close() })
		return tr
	})
}

var _ engine.Device = engine.NewHost()
