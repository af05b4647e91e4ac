//go:build fedcuda || fedcudaemu

package cudadev_test

import (
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
)

// gpuBench is the model and batch of BenchmarkLoRAStepGPU; the PyTorch
// side of scripts/bench-gpu.sh (scripts/bench_train_gpu_torch.py) takes
// the same numbers as flags.
type gpuBench struct {
	Name                             string
	Vocab, Hidden, Inter, Layers     int
	Heads, KVHeads, Batch, Seq, Rank int
}

// gpuBenches: "d1024-8layer" is a mid-size LLaMA (about 170M parameters:
// d=1024, 8 layers, 16 query heads sharing 4 key/value heads of 64, SwiGLU
// 2816, a 32,000-token vocabulary, untied head) at 8 windows of 256 tokens
// a step; "tiny" is configs/models/tiny.yaml at 8×64, where launch overhead
// dominates.
var gpuBenches = []gpuBench{
	{Name: "d1024-8layer", Vocab: 32000, Hidden: 1024, Inter: 2816, Layers: 8, Heads: 16, KVHeads: 4, Batch: 8, Seq: 256, Rank: 8},
	{Name: "tiny", Vocab: 256, Hidden: 64, Inter: 172, Layers: 2, Heads: 4, KVHeads: 2, Batch: 8, Seq: 64, Rank: 8},
}

// BenchmarkLoRAStepGPU measures one LoRA training step on GPU 0 (r=8,
// alpha 16, on q_proj and v_proj; gradient clipping at 1; AdamW on the
// adapter) and reports input tokens per second (tok/s).
func BenchmarkLoRAStepGPU(b *testing.B) {
	for _, bc := range gpuBenches {
		b.Run(bc.Name, func(b *testing.B) {
			dev := openGPU(b)
			defer dev.Close()
			c := model.DefaultConfig()
			c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = bc.Vocab, bc.Hidden, bc.Inter, bc.Layers
			c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = bc.Heads, bc.KVHeads, bc.Seq
			m, err := model.New(c, 1)
			if err != nil {
				b.Fatal(err)
			}
			tc := model.TrainConfig{LoRA: &model.LoRAConfig{Rank: bc.Rank, Alpha: 16, Targets: []string{"q_proj", "v_proj"}},
				Steps: 1 << 30, Batch: bc.Batch, SeqLen: bc.Seq, LR: 1e-3, ClipNorm: 1, Schedule: model.ScheduleConstant, Seed: 1}
			tr, err := engine.NewTrainer(dev, m, nil, tc)
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			win := batch(bc.Batch, bc.Seq, bc.Vocab, 1)
			for range 3 { // warm up: JIT, cuBLAS heuristics, allocator
				if _, err := tr.Step(win); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := tr.Step(win); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*bc.Batch*bc.Seq)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
