//go:build fedcuda || fedcudaemu

package cudadev_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/engine/cudadev"
	"github.com/fedtune/fedtune/model/engine/enginetest"
	"github.com/fedtune/fedtune/model/gorgoniaref"
)

// openGPU opens GPU 0, skipping the test when the machine has none.
func openGPU(t testing.TB) engine.Device {
	t.Helper()
	dev, err := cudadev.Open(0)
	if err != nil {
		if errors.Is(err, cudadev.ErrNoDevice) {
			t.Skipf("no usable GPU, skipping the CUDA device test: %v", err)
		}
		t.Fatal(err)
	}
	return dev
}

// TestOpen opens GPU 0, or checks that a machine without a GPU gets an
// error wrapping ErrNoDevice rather than a dead process.
func TestOpen(t *testing.T) {
	dev, err := cudadev.Open(0)
	if err != nil {
		if !errors.Is(err, cudadev.ErrNoDevice) {
			t.Fatalf("Open(0) without a usable GPU: %v, want an error wrapping ErrNoDevice", err)
		}
		t.Skipf("no usable GPU (Open says %q): the CUDA tests skip", err)
	}
	if dev.Name() != "cuda:0" {
		t.Errorf("Name() = %q", dev.Name())
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := cudadev.Open(1 << 20); !errors.Is(err, cudadev.ErrNoDevice) {
		t.Errorf("Open(1<<20): %v, want an error wrapping ErrNoDevice", err)
	}
}

// TestConformance runs package enginetest's suite: every operation against
// the Host device to 1e-3 relative, backward operations against finite
// differences, and the sticky-error rules.
func TestConformance(t *testing.T) {
	if err := openGPU(t).Close(); err != nil {
		t.Fatal(err)
	}
	enginetest.TestDevice(t, func() engine.Device {
		dev, err := cudadev.Open(0)
		if err != nil {
			panic(err) // it opened a moment ago
		}
		return dev
	})
}

// TestErrors checks the device's own argument checks: ids are validated
// on the host before any launch, foreign buffers are refused, and the
// error is sticky until Sync.
func TestErrors(t *testing.T) {
	dev := openGPU(t)
	defer dev.Close()
	table, out := dev.Alloc(4*3), dev.Alloc(2*3)
	ids := dev.AllocInt(2)
	dev.WriteInt(ids, []int32{1, 4})
	dev.Embed(out, table, ids, 3)
	dev.Zero(out) // skipped: an error is pending
	err := dev.Sync()
	if !errors.Is(err, engine.ErrDevice) || !strings.Contains(err.Error(), "id 4 outside [0, 4)") {
		t.Errorf("embed of id 4 in a 4-row table: %v", err)
	}
	if err := dev.Sync(); err != nil {
		t.Errorf("Sync did not clear the error: %v", err)
	}
	h := engine.NewHost()
	defer h.Close()
	dev.Copy(out, h.Alloc(6))
	if err := dev.Sync(); !errors.Is(err, engine.ErrDevice) {
		t.Errorf("a Host buffer given to the GPU: %v", err)
	}
	dev.Free(out)
	dev.Zero(out)
	if err := dev.Sync(); err == nil || !strings.Contains(err.Error(), "freed") {
		t.Errorf("use after Free: %v", err)
	}
	loss, logits := dev.Alloc(2), dev.Alloc(2*5)
	tg := dev.AllocInt(2)
	dev.WriteInt(tg, []int32{0, -1})
	dev.CrossEntropy(loss, logits, logits, tg, 2, 5, 1)
	if err := dev.Sync(); err == nil || !strings.Contains(err.Error(), "target -1") {
		t.Errorf("target -1: %v", err)
	}
}

// testConfig is a small LLaMA (grouped-query attention, untied head) at a
// shape that exercises every kernel's edge handling: T and d are not
// multiples of the block sizes.
func testConfig() model.Config {
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 300, 96, 200, 2
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 6, 2, 64
	return c
}

// batch returns B windows of T+1 seeded random token ids.
func batch(B, T, V int, seed uint64) [][]int {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([][]int, B)
	for i := range out {
		out[i] = make([]int, T+1)
		for j := range out[i] {
			out[i][j] = r.IntN(V)
		}
	}
	return out
}

// agree fails unless every got[i] is within tol·(|want[i]| + rms(want)) of
// want[i] (the conformance suite's measure).
func agree(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var ss float64
	for _, w := range want {
		ss += float64(w) * float64(w)
	}
	rms := math.Sqrt(ss / float64(max(len(want), 1)))
	bad := 0
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		if !(math.Abs(g-w) <= tol*(math.Abs(w)+rms)) {
			if bad < 5 {
				t.Errorf("%s[%d] = %g, want %g (tolerance %g·(|want| + rms %g))", what, i, g, w, tol, rms)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values disagree", what, bad, len(got))
	}
}

// TestForwardAgrees compares the logits of the GPU's training forward with
// the Host engine's, and the engine's inference Runner on the GPU with
// them, on the same windows.
func TestForwardAgrees(t *testing.T) {
	gpu := openGPU(t)
	defer gpu.Close()
	c := testConfig()
	m, err := model.New(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 3, 37
	tc := model.TrainConfig{Steps: 1, Batch: B, SeqLen: T, LR: 1e-3, Schedule: model.ScheduleConstant}
	win := batch(B, T, c.VocabSize, 5)
	logits := func(dev engine.Device) []float32 {
		tr, err := engine.NewTrainer(dev, m, nil, tc)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		out, err := tr.Forward(win)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	host := engine.NewHost()
	defer host.Close()
	got, want := logits(gpu), logits(host)
	agree(t, "GPU logits vs Host", got, want, 1e-3)
	// The inference Runner on the GPU gives the Host trainer's logits.
	r, err := engine.NewRunner(gpu, m)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	V := c.VocabSize
	for b, w := range win {
		inf, err := r.Logits(w[:T])
		if err != nil {
			t.Fatal(err)
		}
		agree(t, "GPU Runner logits vs Host", inf, want[b*T*V:(b+1)*T*V], 1e-3)
	}
}

// stepCase is one training-step comparison.
type stepCase struct {
	name string
	lora *model.LoRAConfig
}

var stepCases = []stepCase{
	{"lora", &model.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}},
	{"full", nil},
}

// TestStepAgrees takes two training steps on the GPU, on the Host engine
// and with model/gorgoniaref's Gorgonia trainer from the same weights and
// batches, and compares the losses and how far each weight moved. The
// adapter starts with B ≠ 0 so that both A and B have gradients. Eps is
// raised to 1e-4 so that AdamW's first step, lr·g/(|g|+eps), is smooth in
// g: with eps 1e-8 a gradient within rounding of zero could move its
// weight by ±lr either way.
func TestStepAgrees(t *testing.T) {
	gpu := openGPU(t)
	defer gpu.Close()
	c := testConfig()
	for _, sc := range stepCases {
		t.Run(sc.name, func(t *testing.T) {
			m, err := model.New(c, 11)
			if err != nil {
				t.Fatal(err)
			}
			const B, T = 2, 29
			tc := model.TrainConfig{LoRA: sc.lora, Steps: 2, Batch: B, SeqLen: T, LR: 1e-3, WeightDecay: 0.01,
				ClipNorm: 1, Eps: 1e-4, Schedule: model.ScheduleConstant, Seed: 9}
			var ad *model.Adapter
			if sc.lora != nil {
				if ad, err = model.NewAdapter(c, *sc.lora, 4); err != nil {
					t.Fatal(err)
				}
				r := rand.New(rand.NewPCG(2, 2))
				for name, x := range ad.Tensors {
					if strings.Contains(name, "lora_B") {
						for i := range x.Data {
							x.Data[i] = float32(r.NormFloat64() * 0.02)
						}
					}
				}
			}
			batches := [][][]int{batch(B, T, c.VocabSize, 1), batch(B, T, c.VocabSize, 2)}
			type result struct {
				loss    []float64
				weights map[string][]float32
			}
			weights := func(a *model.Adapter, mm *model.Model) map[string][]float32 {
				out := map[string][]float32{}
				if a != nil {
					for n, x := range a.Tensors {
						out[n] = x.Data
					}
					return out
				}
				for n, x := range mm.Tensors {
					out[n] = x.Data
				}
				return out
			}
			onEngine := func(dev engine.Device) result {
				tr, err := engine.NewTrainer(dev, m, ad, tc)
				if err != nil {
					t.Fatal(err)
				}
				defer tr.Close()
				var res result
				for _, b := range batches {
					l, err := tr.Step(b)
					if err != nil {
						t.Fatal(err)
					}
					res.loss = append(res.loss, l)
				}
				res.weights = weights(tr.Adapter(), tr.Model())
				return res
			}
			host := engine.NewHost()
			defer host.Close()
			g, h := onEngine(gpu), onEngine(host)
			gt, err := gorgoniaref.NewTrainerWithAdapter(m, ad, tc)
			if err != nil {
				t.Fatal(err)
			}
			defer gt.Close()
			var ref result
			for _, b := range batches {
				l, err := gt.Step(b)
				if err != nil {
					t.Fatal(err)
				}
				ref.loss = append(ref.loss, l)
			}
			ref.weights = weights(gt.Adapter(), gt.Model())

			for i := range ref.loss {
				for _, o := range []struct {
					who string
					l   float64
				}{{"GPU", g.loss[i]}, {"Host", h.loss[i]}} {
					if math.Abs(o.l-ref.loss[i]) > 1e-3*ref.loss[i] {
						t.Errorf("step %d loss: %s %v, Gorgonia %v", i+1, o.who, o.l, ref.loss[i])
					}
				}
			}
			start := weights(ad, m)
			if len(ref.weights) != len(start) || len(g.weights) != len(start) {
				t.Fatalf("%d trained tensors on the GPU, %d with Gorgonia, %d to start", len(g.weights), len(ref.weights), len(start))
			}
			delta := func(after, before []float32) []float32 {
				d := make([]float32, len(after))
				for i := range d {
					d[i] = after[i] - before[i]
				}
				return d
			}
			for name, w0 := range start {
				want := delta(ref.weights[name], w0)
				agree(t, sc.name+" GPU update of "+name+" vs Gorgonia", delta(g.weights[name], w0), want, 1e-2)
				agree(t, sc.name+" GPU update of "+name+" vs Host", delta(g.weights[name], w0), delta(h.weights[name], w0), 1e-2)
				agree(t, sc.name+" GPU weights "+name+" vs Gorgonia", g.weights[name], ref.weights[name], 1e-3)
			}
		})
	}
}

// TestDeterministic: the same steps on the GPU give the same bits (no
// kernel uses atomics).
func TestDeterministic(t *testing.T) {
	gpu := openGPU(t)
	defer gpu.Close()
	c := testConfig()
	m, err := model.New(c, 2)
	if err != nil {
		t.Fatal(err)
	}
	tc := model.TrainConfig{LoRA: &model.LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.1, Targets: []string{"q_proj", "v_proj"}},
		Steps: 3, Batch: 2, SeqLen: 33, LR: 1e-3, ClipNorm: 1, Schedule: model.ScheduleConstant, Seed: 5}
	run := func() (*model.Adapter, []float64) {
		tr, err := engine.NewTrainer(gpu, m, nil, tc)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		var losses []float64
		for i := 0; i < tc.Steps; i++ {
			l, err := tr.Step(batch(2, 33, c.VocabSize, uint64(i)))
			if err != nil {
				t.Fatal(err)
			}
			losses = append(losses, l)
		}
		return tr.Adapter(), losses
	}
	a1, l1 := run()
	a2, l2 := run()
	for i := range l1 {
		if l1[i] != l2[i] {
			t.Errorf("step %d: loss %v then %v", i+1, l1[i], l2[i])
		}
	}
	for name, x := range a1.Tensors {
		for i, v := range x.Data {
			if a2.Tensors[name].Data[i] != v {
				t.Fatalf("%s[%d]: %v then %v", name, i, v, a2.Tensors[name].Data[i])
			}
		}
	}
}

// TestMatMulOverlappingC: a batch whose outputs overlap (StrideC 0, Beta 1:
// a sum of products into one C) runs product after product, as on Host;
// cuBLAS's strided batch would race.
func TestMatMulOverlappingC(t *testing.T) {
	gpu := openGPU(t)
	defer gpu.Close()
	host := engine.NewHost()
	defer host.Close()
	r := rand.New(rand.NewPCG(3, 3))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.Float64()*2 - 1)
		}
		return v
	}
	const M, N, K, batch = 5, 7, 6, 4
	a, b, c := vec(batch*M*K), vec(batch*K*N), vec(M*N)
	var got [2][]float32
	for i, dev := range []engine.Device{gpu, host} {
		A, B, C := dev.Alloc(len(a)), dev.Alloc(len(b)), dev.Alloc(len(c))
		dev.Write(A, 0, a)
		dev.Write(B, 0, b)
		dev.Write(C, 0, c)
		dev.MatMul(engine.Gemm{M: M, N: N, K: K, Alpha: 1, Beta: 1, A: A, B: B, C: C, Batch: batch,
			StrideA: M * K, StrideB: K * N, StrideC: 0})
		got[i] = make([]float32, len(c))
		dev.Read(got[i], C, 0)
		if err := dev.Sync(); err != nil {
			t.Fatalf("%s: %v", dev.Name(), err)
		}
	}
	agree(t, "C = C + Σ A_i·B_i", got[0], got[1], 1e-5)
}
