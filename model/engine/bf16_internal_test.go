package engine

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
)

// bf16Pair saves a random model as a BF16 checkpoint and loads it twice:
// with Load (every weight float32) and with LoadBF16 (the matrices held as
// bfloat16). Its shapes cross every block boundary of sgemmVec: d = 272 >
// gemmKC, V = 1100 > gemmNC, and no dimension a multiple of 16.
func bf16Pair(t *testing.T) (f32, bf *model.Model) {
	t.Helper()
	c := modeltest.TinyConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize = 1100, 272, 300
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 4, 2, 64
	c.InitializerRange = 0.05
	c.TieWordEmbeddings = true
	m, err := model.New(c, 17)
	if err != nil {
		t.Fatal(err)
	}
	modeltest.Randomise(m, 17)
	dir := t.TempDir()
	if _, err := m.Save(dir, safetensors.BF16); err != nil {
		t.Fatal(err)
	}
	if f32, err = model.Load(dir); err != nil {
		t.Fatal(err)
	}
	if bf, err = model.LoadBF16(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range bf.Names() {
		tb, tf := bf.Tensors[name], f32.Tensors[name]
		if held := tb.BF16 != nil && tb.Data == nil; held != (len(tb.Shape) == 2) {
			t.Fatalf("LoadBF16: %s (shape %v) held as bfloat16: %t", name, tb.Shape, held)
		}
		w := tb.Float32s()
		for i := range w {
			if math.Float32bits(w[i]) != math.Float32bits(tf.Data[i]) {
				t.Fatalf("%s[%d]: LoadBF16 widens to %g, Load reads %g", name, i, w[i], tf.Data[i])
			}
		}
	}
	return f32, bf
}

// eachKernel runs f under every sgemm micro-kernel this CPU has (once, on
// the default path, where it has none: then gonum's sgemm reads a widened
// copy of B).
func eachKernel(t *testing.T, f func(t *testing.T)) {
	ks := gemmKernels()
	if len(ks) == 0 {
		f(t)
		return
	}
	saved := gemmKernel
	defer func() { gemmKernel = saved }()
	for _, k := range ks {
		gemmKernel = k
		t.Run(fmt.Sprintf("mr%d", k.mr), f)
	}
}

func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values from bfloat16 weights, %d from float32", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s[%d]: %g from bfloat16 weights, %g from float32 (bits %08x, %08x)",
				what, i, got[i], want[i], math.Float32bits(got[i]), math.Float32bits(want[i]))
		}
	}
}

// TestBF16WeightsBitIdentical: frozen weights held as bfloat16 (LoadBF16,
// WrapBF16 on the Host) give the same bits as the same values held as
// float32, in LoRA training steps (losses and the trained adapter), in
// full fine-tuning (the weights widened on upload), in the Runner's forward
// (eval) and in the Decoder's prefill and decoding (generate).
func TestBF16WeightsBitIdentical(t *testing.T) {
	f32, bf := bf16Pair(t)
	V := f32.Config.VocabSize
	const B, T = 2, 23 // 46 rows: a short panel under both kernels
	batch := func(seed uint64) [][]int {
		r := modeltest.RNG(seed, "bf16-batch")
		out := make([][]int, B)
		for b := range out {
			out[b] = make([]int, T+1)
			for i := range out[b] {
				out[b][i] = r.IntN(V)
			}
		}
		return out
	}
	eachKernel(t, func(t *testing.T) {
		for _, full := range []bool{false, true} {
			tc := model.TrainConfig{Steps: 3, Batch: B, SeqLen: T, LR: 1e-2, Seed: 5}
			if !full {
				tc.LoRA = &model.LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.1,
					Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
			}
			var losses [2][]float64
			var trs [2]*Trainer
			for side, m := range []*model.Model{f32, bf} {
				tr, err := NewTrainer(NewHost(), m, nil, tc)
				if err != nil {
					t.Fatal(err)
				}
				defer tr.Close()
				trs[side] = tr
				for s := 0; s < tc.Steps; s++ {
					loss, err := tr.Step(batch(uint64(s)))
					if err != nil {
						t.Fatal(err)
					}
					losses[side] = append(losses[side], loss)
				}
			}
			for s := range losses[0] {
				if math.Float64bits(losses[0][s]) != math.Float64bits(losses[1][s]) {
					t.Fatalf("full=%t step %d: loss %v from bfloat16 weights, %v from float32", full, s, losses[1][s], losses[0][s])
				}
			}
			if full {
				got, want := trs[1].Model(), trs[0].Model()
				for _, name := range want.Names() {
					sameBits(t, "full fine-tune "+name, got.Tensors[name].Data, want.Tensors[name].Data)
				}
				continue
			}
			got, want := trs[1].Adapter(), trs[0].Adapter()
			for name, tn := range want.Tensors {
				sameBits(t, "adapter "+name, got.Tensors[name].Data, tn.Data)
			}
		}

		// The Runner (eval): one sequence's logits.
		ids := batch(9)[0]
		var logits [2][]float32
		for side, m := range []*model.Model{f32, bf} {
			r, err := NewRunner(NewHost(), m)
			if err != nil {
				t.Fatal(err)
			}
			if logits[side], err = r.Logits(ids); err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		}
		sameBits(t, "runner logits", logits[1], logits[0])

		// The Decoder (generate): a prefill of 20 rows, then single tokens
		// (the float32 side reads packed weights).
		var dl [2][]float32
		for side, m := range []*model.Model{f32, bf} {
			dec, err := NewDecoder(NewHost().(CacheDevice), m, 1, 32)
			if err != nil {
				t.Fatal(err)
			}
			feed := ids[:20]
			for step := 0; step < 4; step++ {
				out, err := dec.Forward(chunkOf(0, feed))
				if err != nil {
					t.Fatal(err)
				}
				dl[side] = append(dl[side], out...)
				feed = ids[20+step : 21+step]
			}
			if err := dec.Close(); err != nil {
				t.Fatal(err)
			}
		}
		sameBits(t, "decoder logits", dl[1], dl[0])

		// Generate end to end (greedy).
		var gen [2][]int
		for side, m := range []*model.Model{f32, bf} {
			out, err := Generate(context.Background(), NewHost(), m, ids[:5], model.GenerateConfig{MaxTokens: 6})
			if err != nil {
				t.Fatal(err)
			}
			gen[side] = out
		}
		if fmt.Sprint(gen[0]) != fmt.Sprint(gen[1]) {
			t.Fatalf("generate: %v from bfloat16 weights, %v from float32", gen[1], gen[0])
		}
	})
}

// TestWrapBF16 covers the Host's bfloat16 buffers directly: MatMul with B
// bfloat16 in all four transpositions and batched, against B widened;
// Embed and Read widen; every operation that would write one, or read it
// where only float32 goes, is an error naming it.
func TestWrapBF16(t *testing.T) {
	r := modeltest.RNG(3, "wrap")
	raw := make([]uint16, 3*37*41)
	for i := range raw {
		raw[i] = safetensors.Float32ToBF16(float32(r.NormFloat64()))
	}
	wide := widenBF16(raw)
	eachKernel(t, func(t *testing.T) {
		h := NewHost().(BF16Device)
		wb, wf := h.WrapBF16(raw), h.Alloc(len(wide))
		h.Write(wf, 0, wide)
		if wb.Len() != len(raw) {
			t.Fatalf("Len %d, want %d", wb.Len(), len(raw))
		}
		for _, tc := range []struct {
			name string
			g    Gemm
		}{
			{"NN", Gemm{M: 29, N: 41, K: 37}},
			{"NT", Gemm{TransB: true, M: 29, N: 37, K: 41}},
			{"TN", Gemm{TransA: true, M: 29, N: 41, K: 37}},
			{"TT", Gemm{TransA: true, TransB: true, M: 29, N: 37, K: 41}},
			{"batched", Gemm{M: 13, N: 41, K: 37, Batch: 3, StrideA: 13 * 37, StrideB: 37 * 41, StrideC: 13 * 41}},
			{"ldb", Gemm{TransB: true, M: 5, N: 20, K: 30, LDB: 41}},
		} {
			g := tc.g
			na := max(g.Batch, 1) * g.M * g.K
			a := h.Alloc(na)
			av := make([]float32, na)
			for i := range av {
				av[i] = float32(r.NormFloat64())
			}
			h.Write(a, 0, av)
			var out [2][]float32
			for side, b := range []Buffer{wf, wb} {
				c := h.Alloc(max(g.Batch, 1) * g.M * g.N)
				g.A, g.B, g.C, g.Alpha = a, b, c, 1.5
				h.MatMul(g)
				out[side] = make([]float32, c.Len())
				h.Read(out[side], c, 0)
			}
			if err := h.Sync(); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			sameBits(t, tc.name, out[1], out[0])
		}
		ids := h.AllocInt(3)
		h.WriteInt(ids, []int32{4, 0, 110})
		var emb [2][]float32
		for side, tb := range []Buffer{wf, wb} {
			o := h.Alloc(3 * 41)
			h.Embed(o, tb, ids, 41)
			emb[side] = make([]float32, 3*41)
			h.Read(emb[side], o, 0)
		}
		got := make([]float32, 100)
		h.Read(got, wb, 7)
		if err := h.Sync(); err != nil {
			t.Fatal(err)
		}
		sameBits(t, "Embed", emb[1], emb[0])
		sameBits(t, "Read", got, wide[7:107])

		for _, bad := range []struct {
			name string
			op   func()
		}{
			{"Write", func() { h.Write(wb, 0, wide[:3]) }},
			{"Zero", func() { h.Zero(wb) }},
			{"AdamW", func() { h.AdamW(wb, wf, h.Alloc(len(wide)), h.Alloc(len(wide)), AdamW{}) }},
			{"MatMul A", func() { h.MatMul(Gemm{M: 1, N: 1, K: 1, A: wb, B: wf, C: h.Alloc(1)}) }},
			{"Mul", func() { h.Mul(h.Alloc(len(wide)), wb, wf) }},
			{"RMSNorm", func() { h.RMSNorm(h.Alloc(len(wide)), h.Alloc(1), wb, h.Alloc(len(wide)), 1, len(wide), 1e-5) }},
		} {
			bad.op()
			err := h.Sync()
			if err == nil || !strings.Contains(err.Error(), "bfloat16") {
				t.Errorf("%s on a bfloat16 buffer: error %v, want one naming bfloat16", bad.name, err)
			}
		}
		h.Free(wb)
		h.Embed(h.Alloc(41), wb, ids, 41)
		if err := h.Sync(); err == nil || !strings.Contains(err.Error(), "freed") {
			t.Errorf("Embed from a freed bfloat16 table: error %v, want one saying freed", err)
		}
		if b := h.WrapBF16(nil); h.Sync() == nil {
			t.Errorf("WrapBF16(nil) gave %v and no error", b)
		}
	})
}

// BenchmarkBF16Weights times what holding the frozen weights as bfloat16
// costs beside float32 (the same values), at SmolLM2-135M's layer widths
// (4 layers): a LoRA step of 2 × 128 tokens, and decoding one token (where
// the float32 weights are packed once and the bfloat16 ones are widened on
// every product). Compare the f32 and bf16 lines of one run.
func BenchmarkBF16Weights(b *testing.B) {
	c := modeltest.TinyConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 49152, 576, 1536, 4
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings, c.TieWordEmbeddings = 9, 3, 256, true
	c.InitializerRange = 0.02
	m, err := model.New(c, 1)
	if err != nil {
		b.Fatal(err)
	}
	bf := &model.Model{Config: c, Tensors: map[string]*model.Tensor{}}
	for name, t := range m.Tensors {
		raw := make([]uint16, len(t.Data))
		for i, v := range t.Data {
			raw[i] = safetensors.Float32ToBF16(v)
			t.Data[i] = safetensors.BF16ToFloat32(raw[i])
		}
		bf.Tensors[name] = t
		if len(t.Shape) == 2 {
			bf.Tensors[name] = &model.Tensor{Shape: t.Shape, BF16: raw}
		}
	}
	r := modeltest.RNG(1, "bench")
	windows := make([][]int, 2)
	for i := range windows {
		windows[i] = make([]int, 129)
		for j := range windows[i] {
			windows[i][j] = r.IntN(c.VocabSize)
		}
	}
	for _, side := range []struct {
		name string
		m    *model.Model
	}{{"f32", m}, {"bf16", bf}} {
		b.Run("step-"+side.name, func(b *testing.B) {
			tr, err := NewTrainer(NewHost(), side.m, nil, model.TrainConfig{Steps: 1 << 30, Batch: 2, SeqLen: 128, LR: 1e-3,
				LoRA: &model.LoRAConfig{Rank: 8, Alpha: 16, Targets: []string{"q_proj", "v_proj"}}})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			for b.Loop() {
				if _, err := tr.Step(windows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(256*b.N)/b.Elapsed().Seconds(), "tok/s")
		})
		b.Run("decode-"+side.name, func(b *testing.B) {
			dec, err := NewDecoder(NewHost().(CacheDevice), side.m, 1, c.MaxPositionEmbeddings)
			if err != nil {
				b.Fatal(err)
			}
			defer dec.Close()
			n := 0
			for b.Loop() {
				if n == c.MaxPositionEmbeddings {
					dec.Reset(0)
					n = 0
				}
				if _, err := dec.Forward(chunkOf(0, windows[0][n%128:n%128+1])); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}
