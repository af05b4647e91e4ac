// Command trainbench is the real-size half of scripts/bench-train.sh: it
// times the engine's LoRA training step (Host device, all cores) at the
// shape of SmolLM2-135M (vocab 49,152, d 576, 30 layers, 9 / 3 heads,
// intermediate 1536, tied embeddings; random weights), 4 × 256 tokens a
// step, LoRA r 8 on q_proj and v_proj, and in the same run the engine's
// own GEMM rate (Device.MatMul on the step's MLP shape). The frozen base
// is held as model.LoadBF16 holds a BF16 checkpoint (bfloat16, widened as
// the sgemm packs it); the same weights held as float32 run beside it,
// their steps interleaved, for the cost of that. It prints one line:
//
//	engine_tok_per_s X step_ms Y step_gflop Z step_gflops W gemm_gflops G f32_tok_per_s F bf16_over_f32 R
//
// step_gflop counts the step's model FLOPs: the frozen projections and LM
// head forward and their input gradients backward (2·MNK each), attention
// over the whole window (QKᵀ and AV forward, four products backward), and
// the LoRA products; no recomputation. PyTorch's step at the same shape
// does the same arithmetic, so the same count divides both times.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/safetensors"
)

// smolLM2 is SmolLM2-135M's config.json.
func smolLM2() model.Config {
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 49152, 576, 1536, 30
	c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.MaxPositionEmbeddings = 9, 3, 64, 8192
	c.RopeTheta, c.TieWordEmbeddings, c.RMSNormEps = 100000, true, 1e-5
	return c
}

// stepFLOP is the model FLOPs of one LoRA step of batch × seq tokens.
func stepFLOP(c *model.Config, batch, seq, rank int) float64 {
	d, hd := float64(c.HiddenSize), float64(c.HeadDimension())
	h, kv, in := float64(c.NumAttentionHeads), float64(c.KVHeads()), float64(c.IntermediateSize)
	lin := d*h*hd + 2*d*kv*hd + h*hd*d + 3*d*in // frozen projection weights a layer
	lora := float64(rank) * ((d + h*hd) + (d + kv*hd))
	L, T, V := float64(c.NumHiddenLayers), float64(seq), float64(c.VocabSize)
	perTok := 2*2*lin*L + // forward, input gradient
		2*2*V*d + // LM head forward, input gradient
		(4+8)*T*h*hd*L + // attention: 2 products forward, 4 backward
		2*3*lora*L // LoRA: forward, input and weight gradients
	return perTok * float64(batch*seq)
}

func main() {
	batch := flag.Int("batch", 4, "windows a step")
	seq := flag.Int("seq", 256, "tokens a window")
	steps := flag.Int("steps", 3, "timed steps (after one warm-up step)")
	seconds := flag.Float64("seconds", 0, "time at least this long (more steps)")
	flag.Parse()

	c := smolLM2()
	m, err := model.New(c, 1)
	if err != nil {
		fail(err)
	}
	// The BF16 checkpoint's weights: m rounded to bfloat16, and held so.
	bf := &model.Model{Config: c, Tensors: map[string]*model.Tensor{}}
	for name, t := range m.Tensors {
		raw := make([]uint16, len(t.Data))
		for i, v := range t.Data {
			raw[i] = safetensors.Float32ToBF16(v)
			t.Data[i] = safetensors.BF16ToFloat32(raw[i])
		}
		if len(t.Shape) == 2 {
			bf.Tensors[name] = &model.Tensor{Shape: t.Shape, BF16: raw}
		} else {
			bf.Tensors[name] = t
		}
	}
	tc := model.TrainConfig{Steps: 1 << 30, Batch: *batch, SeqLen: *seq, LR: 1e-3, ClipNorm: 1,
		Schedule: model.ScheduleConstant, Seed: 1,
		LoRA: &model.LoRAConfig{Rank: 8, Alpha: 16, Targets: []string{"q_proj", "v_proj"}}}
	dev := engine.NewHost()
	tr, err := engine.NewTrainer(dev, bf, nil, tc)
	if err != nil {
		fail(err)
	}
	tr32, err := engine.NewTrainer(engine.NewHost(), m, nil, tc)
	if err != nil {
		fail(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	windows := make([][]int, *batch)
	for i := range windows {
		windows[i] = make([]int, *seq+1)
		for j := range windows[i] {
			windows[i][j] = rng.IntN(c.VocabSize)
		}
	}
	step := func(tr *engine.Trainer) time.Duration {
		start := time.Now()
		if _, err := tr.Step(windows); err != nil {
			fail(err)
		}
		return time.Since(start)
	}
	step(tr) // warm up
	step(tr32)
	var took, took32 time.Duration
	n, start := 0, time.Now()
	for n < *steps || time.Since(start).Seconds() < *seconds {
		took += step(tr)
		took32 += step(tr32)
		n++
	}
	stepS := took.Seconds() / float64(n)
	stepS32 := took32.Seconds() / float64(n)
	tr32.Close()
	flop := stepFLOP(&c, *batch, *seq, 8)

	// The engine's GEMM on all cores, at the step's gate/up projection
	// shape: [batch·seq, d] × [d, intermediate]ᵀ.
	M, N, K := *batch**seq, c.IntermediateSize, c.HiddenSize
	a, b, out := dev.Alloc(M*K), dev.Alloc(N*K), dev.Alloc(M*N)
	fill := make([]float32, max(M*K, N*K))
	for i := range fill {
		fill[i] = rng.Float32() - 0.5
	}
	dev.Write(a, 0, fill[:M*K])
	dev.Write(b, 0, fill[:N*K])
	g := engine.Gemm{M: M, N: N, K: K, Alpha: 1, A: a, B: b, C: out, TransB: true, LDA: K, LDB: K, LDC: N}
	dev.MatMul(g)
	reps, gs := 0, time.Now()
	for reps < 5 || time.Since(gs) < time.Second {
		dev.MatMul(g)
		reps++
	}
	gemm := 2 * float64(M) * float64(N) * float64(K) * float64(reps) / time.Since(gs).Seconds()

	fmt.Printf("engine_tok_per_s %.1f step_ms %.1f step_gflop %.1f step_gflops %.1f gemm_gflops %.1f f32_tok_per_s %.1f bf16_over_f32 %.3f\n",
		float64(*batch**seq)/stepS, 1000*stepS, flop/1e9, flop/stepS/1e9, gemm/1e9, float64(*batch**seq)/stepS32, stepS32/stepS)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "trainbench:", err)
	os.Exit(1)
}
