//go:build fedcuda || fedcudaemu

package cudadev_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
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

// serveShape is a model of BenchmarkServeGPU.
type serveShape struct {
	Name string
	Conf func() model.Config
}

// serveShapes: SmolLM2-135M's architecture (HuggingFaceTB/SmolLM2-135M
// config.json, random FP32 weights), the shape of make bench-serve on the
// CPU; and testConfig's small model, for a quick run on the emulation
// (-test.bench 'ServeGPU/tiny').
var serveShapes = []serveShape{
	{"smollm2-135m", func() model.Config {
		c := model.DefaultConfig()
		c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 49152, 576, 1536, 30
		c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 9, 3, 8192
		c.RopeTheta, c.RMSNormEps, c.TieWordEmbeddings = 100000, 1e-5, true
		return c
	}},
	{"tiny", testConfig},
}

// BenchmarkServeGPU runs the continuous-batching Batcher (greedy, 128-token
// prompts, 128 new tokens a request; 16 and 8 on tiny) on GPU 0 and, in the
// same run, on the Host device: one stream, and 16 streams added at once.
// Each sub-benchmark (shape/device/streams=N) reports generated tokens per
// second over the run (tok/s) and the requests' time to first token
// (ttft-p50-ms, ttft-p99-ms). scripts/bench-gpu.sh prints them side by
// side.
func BenchmarkServeGPU(b *testing.B) {
	for _, sh := range serveShapes {
		c := sh.Conf()
		promptLen, newTokens := 128, 128
		if sh.Name == "tiny" {
			promptLen, newTokens = 16, 8
		}
		newModel := sync.OnceValues(func() (*model.Model, error) { return model.New(c, 1) })
		for _, side := range []string{"cuda", "host"} {
			for _, streams := range []int{1, 16} {
				b.Run(fmt.Sprintf("%s/%s/streams=%d", sh.Name, side, streams), func(b *testing.B) {
					m, err := newModel()
					if err != nil {
						b.Fatal(err)
					}
					var dev engine.CacheDevice
					if side == "cuda" {
						dev = openCacheGPU(b)
					} else {
						dev = engine.NewHost().(engine.CacheDevice)
					}
					defer dev.Close()
					bt, err := engine.NewBatcher(dev, m, engine.BatcherConfig{Slots: streams, MaxContext: promptLen + newTokens})
					if err != nil {
						b.Fatal(err)
					}
					defer bt.Close()
					gc := model.GenerateConfig{MaxTokens: newTokens}
					// Warm up: kernels JIT-compiled, cuBLAS heuristics,
					// the activations of each row count allocated.
					serveRound(b, bt, c.VocabSize, promptLen, gc, streams, 1<<20, nil)
					var ttft []time.Duration
					tokens := 0
					b.ResetTimer()
					start := time.Now()
					for i := 0; i < b.N; i++ {
						tokens += serveRound(b, bt, c.VocabSize, promptLen, gc, streams, uint64(i*streams), &ttft)
					}
					el := time.Since(start)
					b.StopTimer()
					slices.Sort(ttft)
					pct := func(p float64) float64 {
						return ttft[min(len(ttft)-1, int(p*float64(len(ttft))))].Seconds() * 1e3
					}
					b.ReportMetric(float64(tokens)/el.Seconds(), "tok/s")
					b.ReportMetric(pct(0.50), "ttft-p50-ms")
					b.ReportMetric(pct(0.99), "ttft-p99-ms")
				})
			}
		}
	}
}

// serveRound adds streams requests at once (seeded prompts of promptLen
// tokens), reads them to their ends and returns the tokens generated,
// appending each request's time to first token to ttft when it is set.
func serveRound(b *testing.B, bt *engine.Batcher, V, promptLen int, gc model.GenerateConfig, streams int, seed uint64, ttft *[]time.Duration) int {
	chs := make([]<-chan engine.Token, streams)
	for s := range chs {
		var err error
		if chs[s], err = bt.Add(context.Background(), modeltest.IDs(promptLen, V, seed+uint64(s)), gc); err != nil {
			b.Fatal(err)
		}
	}
	added := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	tokens := 0
	for _, ch := range chs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for tok := range ch {
				if tok.Finish != "" {
					if tok.Err != nil {
						b.Error(tok.Err)
					}
					break
				}
				if n == 0 && ttft != nil {
					mu.Lock()
					*ttft = append(*ttft, time.Since(added))
					mu.Unlock()
				}
				n++
			}
			mu.Lock()
			tokens += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	return tokens
}
