package model

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/model/safetensors"
	"gorgonia.org/tensor"
)

// refLogProbs is an independent float64 reference of LlamaForCausalLM's
// forward pass, written directly from the transformers modelling code's
// definitions with plain loops: it returns log-softmax(logits) for each
// position of ids. ad, if non-nil, is applied unmerged (W x + s·B A x).
func refLogProbs(m *Model, ad *Adapter, ids []int) [][]float64 {
	c := m.Config
	d, H, KV := c.HiddenSize, c.NumAttentionHeads, c.KVHeads()
	hd := d / H
	if c.HeadDim > 0 {
		hd = c.HeadDim
	}
	T := len(ids)
	w := func(name string) []float32 { return m.Tensors[name].Data }
	// y[o] = sum_i W[o][i] x[i]  (W is [out, in])
	lin := func(name string, x []float64) []float64 {
		W := m.Tensors[name]
		out, in := W.Shape[0], W.Shape[1]
		y := make([]float64, out)
		for o := 0; o < out; o++ {
			for i := 0; i < in; i++ {
				y[o] += float64(W.Data[o*in+i]) * x[i]
			}
		}
		if ad != nil {
			an, bn := LoRANames(name)
			if A, ok := ad.Tensors[an]; ok {
				B := ad.Tensors[bn]
				r := A.Shape[0]
				ax := make([]float64, r)
				for k := 0; k < r; k++ {
					for i := 0; i < in; i++ {
						ax[k] += float64(A.Data[k*in+i]) * x[i]
					}
				}
				s := ad.Config.Alpha / float64(ad.Config.Rank)
				for o := 0; o < out; o++ {
					for k := 0; k < r; k++ {
						y[o] += s * float64(B.Data[o*r+k]) * ax[k]
					}
				}
			}
		}
		return y
	}
	norm := func(name string, x []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(len(x))+c.RMSNormEps)
		g := w(name)
		y := make([]float64, len(x))
		for i := range x {
			y[i] = float64(g[i]) * x[i] * inv
		}
		return y
	}
	// rotate-half RoPE on one head vector at position t.
	rope := func(v []float64, t int) []float64 {
		half := hd / 2
		out := make([]float64, hd)
		for j := 0; j < hd; j++ {
			f := refInvFreq(&c, j%half, hd)
			ang := float64(t) * f
			var rot float64
			if j < half {
				rot = -v[j+half]
			} else {
				rot = v[j-half]
			}
			out[j] = v[j]*math.Cos(ang) + rot*math.Sin(ang)
		}
		return out
	}
	emb := w(embedName)
	x := make([][]float64, T)
	for t, id := range ids {
		x[t] = make([]float64, d)
		for i := range x[t] {
			x[t][i] = float64(emb[id*d+i])
		}
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		q, k, v := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := 0; t < T; t++ {
			h := norm(p+"input_layernorm.weight", x[t])
			q[t] = lin(p+"self_attn.q_proj.weight", h)
			k[t] = lin(p+"self_attn.k_proj.weight", h)
			v[t] = lin(p+"self_attn.v_proj.weight", h)
			for hh := 0; hh < H; hh++ {
				copy(q[t][hh*hd:], rope(q[t][hh*hd:(hh+1)*hd], t))
			}
			for hh := 0; hh < KV; hh++ {
				copy(k[t][hh*hd:], rope(k[t][hh*hd:(hh+1)*hd], t))
			}
		}
		for t := 0; t < T; t++ {
			att := make([]float64, H*hd)
			for hh := 0; hh < H; hh++ {
				kh := hh / (H / KV)
				sc := make([]float64, t+1)
				mx := math.Inf(-1)
				for s := 0; s <= t; s++ {
					for j := 0; j < hd; j++ {
						sc[s] += q[t][hh*hd+j] * k[s][kh*hd+j]
					}
					sc[s] /= math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[s])
				}
				var z float64
				for s := range sc {
					sc[s] = math.Exp(sc[s] - mx)
					z += sc[s]
				}
				for s := range sc {
					for j := 0; j < hd; j++ {
						att[hh*hd+j] += sc[s] / z * v[s][kh*hd+j]
					}
				}
			}
			o := lin(p+"self_attn.o_proj.weight", att)
			for i := range x[t] {
				x[t][i] += o[i]
			}
			h := norm(p+"post_attention_layernorm.weight", x[t])
			g := lin(p+"mlp.gate_proj.weight", h)
			u := lin(p+"mlp.up_proj.weight", h)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			dn := lin(p+"mlp.down_proj.weight", g)
			for i := range x[t] {
				x[t][i] += dn[i]
			}
		}
	}
	head := lmHeadName
	if c.TieWordEmbeddings {
		head = embedName
	}
	out := make([][]float64, T)
	for t := 0; t < T; t++ {
		h := norm("model.norm.weight", x[t])
		logits := lin(head, h)
		mx := math.Inf(-1)
		for _, v := range logits {
			mx = math.Max(mx, v)
		}
		var z float64
		for _, v := range logits {
			z += math.Exp(v - mx)
		}
		for i := range logits {
			logits[i] -= mx + math.Log(z)
		}
		out[t] = logits
	}
	return out
}

// tinyConfig returns a small config; mutate to make variants.
func tinyConfig() Config {
	c := DefaultConfig()
	c.VocabSize = 37
	c.HiddenSize = 16
	c.IntermediateSize = 24
	c.NumHiddenLayers = 2
	c.NumAttentionHeads = 4
	c.NumKeyValueHeads = 2
	c.MaxPositionEmbeddings = 32
	c.InitializerRange = 0.3
	return c
}

// randomise gives the norms non-trivial values so they are tested too.
func randomise(m *Model, seed uint64) {
	for _, name := range m.Names() {
		r := tensorRNG(seed+7, name)
		t := m.Tensors[name]
		if len(t.Shape) == 1 {
			for i := range t.Data {
				t.Data[i] = float32(0.5 + r.Float64())
			}
		}
	}
}

// graphLogProbs runs the Gorgonia forward on one window of ids.
func graphLogProbs(t *testing.T, m *Model, ad *Adapter, ids []int, dt tensor.Dtype) [][]float64 {
	t.Helper()
	sp := graphSpec{B: 1, T: len(ids), dt: dt}
	if ad != nil {
		sp.lora, sp.adapter = &ad.Config, ad
	}
	gr, err := buildGraph(m, sp)
	if err != nil {
		t.Fatal(err)
	}
	defer gr.close()
	win := append(append([]int{}, ids...), 0)
	if err := gr.setBatch([][]int{win}); err != nil {
		t.Fatal(err)
	}
	if _, err := gr.run(); err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	out := make([][]float64, len(ids))
	for i := range out {
		out[i] = make([]float64, V)
		switch d := gr.logpV.Data().(type) {
		case []float32:
			for j := range out[i] {
				out[i][j] = float64(d[i*V+j])
			}
		case []float64:
			copy(out[i], d[i*V:(i+1)*V])
		}
	}
	return out
}

func maxDiff(a, b [][]float64) float64 {
	var m float64
	for i := range a {
		for j := range a[i] {
			m = math.Max(m, math.Abs(a[i][j]-b[i][j]))
		}
	}
	return m
}

// refInvFreq is inverse frequency i of head dimension hd in float64, with
// c's rope scaling applied as transformers' formulas state it.
func refInvFreq(c *Config, i, hd int) float64 {
	f := 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(hd))
	rs := c.RopeScaling
	switch rs.Kind() {
	case "linear":
		return f / rs.Factor
	case "llama3":
		old := float64(rs.OriginalMaxPositionEmbeddings)
		wavelen := 2 * math.Pi / f
		switch {
		case wavelen < old/rs.HighFreqFactor:
			return f
		case wavelen > old/rs.LowFreqFactor:
			return f / rs.Factor
		}
		s := (old/wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
		return (1-s)*f/rs.Factor + s*f
	}
	return f
}

// tinyLlama3Scaling is llama3 rope scaling for tinyConfig's head dimension
// 4 (frequencies 1 and 0.01) that keeps the first frequency and smooths the
// second.
func tinyLlama3Scaling() *RopeScaling {
	return &RopeScaling{RopeType: "llama3", Factor: 4, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 1024}
}

type variant struct {
	name  string
	mod   func(*Config)
	dtype safetensors.DType
}

var variants = []variant{
	{"mha", func(c *Config) { c.NumKeyValueHeads = 4 }, safetensors.F32},
	{"gqa", func(c *Config) {}, safetensors.F32},
	{"mqa", func(c *Config) { c.NumKeyValueHeads = 1 }, safetensors.F32},
	{"tied", func(c *Config) { c.TieWordEmbeddings = true }, safetensors.F32},
	{"f16", func(c *Config) {}, safetensors.F16},
	{"bf16-tied", func(c *Config) { c.TieWordEmbeddings = true }, safetensors.BF16},
	{"rope-theta-eps", func(c *Config) { c.RopeTheta = 500000; c.RMSNormEps = 1e-2 }, safetensors.F32},
	{"explicit-head-dim", func(c *Config) { c.HeadDim = 6; c.NumKeyValueHeads = 1 }, safetensors.F32},
	{"rope-llama3", func(c *Config) { c.RopeScaling = tinyLlama3Scaling() }, safetensors.F32},
	{"rope-linear", func(c *Config) { c.RopeScaling = &RopeScaling{Type: "linear", Factor: 2} }, safetensors.F32},
	{"one-layer-mha-tied", func(c *Config) {
		c.NumHiddenLayers = 1
		c.NumKeyValueHeads = 0
		c.TieWordEmbeddings = true
	}, safetensors.BF16},
}

// variantModel builds a random model of variant v, saves it in v.dtype and
// loads it back, so the forward runs on what a checkpoint of that dtype holds.
func variantModel(t *testing.T, v variant, seed uint64) *Model {
	t.Helper()
	c := tinyConfig()
	v.mod(&c)
	m, err := New(c, seed)
	if err != nil {
		t.Fatal(err)
	}
	randomise(m, seed)
	dir := filepath.Join(t.TempDir(), v.name)
	if _, err := m.Save(dir, v.dtype); err != nil {
		t.Fatal(err)
	}
	lm, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tol := map[safetensors.DType]float64{safetensors.F32: 0, safetensors.F16: 1e-3, safetensors.BF16: 8e-3}[v.dtype]
	for name, want := range m.Tensors {
		got := lm.Tensors[name]
		for i := range want.Data {
			if d := math.Abs(float64(got.Data[i] - want.Data[i])); d > tol*math.Max(1, math.Abs(float64(want.Data[i]))) {
				t.Fatalf("%s: %s[%d] = %g after a %s round trip, want %g", v.name, name, i, got.Data[i], v.dtype, want.Data[i])
			}
		}
	}
	return lm
}

func testIDs(n, V int, seed uint64) []int {
	r := tensorRNG(seed, "ids")
	ids := make([]int, n)
	for i := range ids {
		ids[i] = r.IntN(V)
	}
	return ids
}

func TestGraphForwardMatchesReference(t *testing.T) {
	for i, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			m := variantModel(t, v, uint64(100+i))
			ids := testIDs(9, m.Config.VocabSize, uint64(i))
			want := refLogProbs(m, nil, ids)
			got := graphLogProbs(t, m, nil, ids, tensor.Float32)
			if d := maxDiff(got, want); d > 1e-4 {
				t.Errorf("float32 graph differs from the reference by %g (> 1e-4)", d)
			}
			got64 := graphLogProbs(t, m, nil, ids, tensor.Float64)
			if d := maxDiff(got64, want); d > 1e-6 { // the graph rounds inv_freq to float32 as transformers does
				t.Errorf("float64 graph differs from the reference by %g (> 1e-6)", d)
			}
		})
	}
}

// runnerLogProbs runs the plain-Go Runner, one token at a time when
// stepwise (exercising the KV cache), else as one block.
func runnerLogProbs(t *testing.T, m *Model, ids []int, stepwise bool) [][]float64 {
	t.Helper()
	r, err := NewRunner(m)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	var logits []float32
	if stepwise {
		for _, id := range ids {
			l, err := r.Forward([]int{id})
			if err != nil {
				t.Fatal(err)
			}
			logits = append(logits, l...)
		}
	} else if logits, err = r.Forward(ids); err != nil {
		t.Fatal(err)
	}
	out := make([][]float64, len(ids))
	for i := range out {
		out[i] = make([]float64, V)
		for j := range out[i] {
			out[i][j] = logSoftmaxAt(logits[i*V:(i+1)*V], j)
		}
	}
	return out
}

func TestRunnerMatchesReference(t *testing.T) {
	for i, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			m := variantModel(t, v, uint64(200+i))
			ids := testIDs(11, m.Config.VocabSize, uint64(i))
			want := refLogProbs(m, nil, ids)
			for _, step := range []bool{false, true} {
				if d := maxDiff(runnerLogProbs(t, m, ids, step), want); d > 1e-4 {
					t.Errorf("runner (stepwise=%v) differs from the reference by %g", step, d)
				}
			}
		})
	}
}

// TestAdapterForward checks the unmerged adapter in the graph, the merged
// model in the graph and in the Runner against the reference.
func TestAdapterForward(t *testing.T) {
	c := tinyConfig()
	m, err := New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	randomise(m, 1)
	lc := LoRAConfig{Rank: 3, Alpha: 6, Targets: []string{"k_proj", "o_proj", "up_proj", "v_proj"}}
	ad, err := NewAdapter(c, lc, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range sortedKeys(ad.Tensors) {
		r := tensorRNG(4, n)
		for i := range ad.Tensors[n].Data {
			ad.Tensors[n].Data[i] = float32(r.NormFloat64() * 0.2)
		}
	}
	ids := testIDs(10, c.VocabSize, 9)
	want := refLogProbs(m, ad, ids)
	if d := maxDiff(want, refLogProbs(m, nil, ids)); d < 1e-3 {
		t.Fatalf("adapter changes the reference output by only %g; the test would not see it", d)
	}
	if d := maxDiff(graphLogProbs(t, m, ad, ids, tensor.Float32), want); d > 1e-4 {
		t.Errorf("graph with adapter differs from the reference by %g", d)
	}
	merged, err := m.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(graphLogProbs(t, merged, nil, ids, tensor.Float32), want); d > 1e-4 {
		t.Errorf("merged model in the graph differs from the reference by %g", d)
	}
	if d := maxDiff(runnerLogProbs(t, merged, ids, true), want); d > 1e-4 {
		t.Errorf("merged model in the runner differs from the reference by %g", d)
	}
}

func TestRunnerMatchesGraph(t *testing.T) {
	m := variantModel(t, variants[1], 7)
	ids := testIDs(20, m.Config.VocabSize, 7)
	if d := maxDiff(runnerLogProbs(t, m, ids, true), graphLogProbs(t, m, nil, ids, tensor.Float32)); d > 1e-4 {
		t.Errorf("runner and Gorgonia graph differ by %g", d)
	}
}

// TestEvaluateWindows checks Evaluate's windowing against the reference:
// non-overlapping windows of max_position_embeddings (32 here), each
// predicting its own tokens 1..n-1; a final window of one token adds none.
func TestEvaluateWindows(t *testing.T) {
	m := variantModel(t, variants[0], 8)
	L := m.Config.MaxPositionEmbeddings
	for _, n := range []int{2, 10, 32, 33, 70} {
		toks := testIDs(n, m.Config.VocabSize, uint64(n))
		var sum float64
		var count int
		for s := 0; s < n; s += L {
			w := toks[s:min(s+L, n)]
			if len(w) < 2 {
				continue
			}
			lp := refLogProbs(m, nil, w[:len(w)-1])
			for i := range lp {
				sum -= lp[i][w[i+1]]
				count++
			}
		}
		res, err := Evaluate(context.Background(), m, toks, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Tokens != count || math.Abs(res.MeanNLL-sum/float64(count)) > 1e-5 ||
			math.Abs(res.Perplexity-math.Exp(res.MeanNLL)) > 1e-9*res.Perplexity {
			t.Errorf("n=%d: got %+v, want %d tokens, mean NLL %g", n, res, count, sum/float64(count))
		}
	}
	if _, err := Evaluate(context.Background(), m, []int{1}, nil); err == nil {
		t.Error("one token evaluated")
	}
}

func TestGenerate(t *testing.T) {
	m := variantModel(t, variants[2], 9)
	prompt := []int{1, 2, 3}
	ctx := context.Background()
	greedy, err := Generate(ctx, m, prompt, GenerateConfig{MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	// Greedy generation picks the reference's argmax at every step.
	seq := append([]int{}, prompt...)
	for _, tok := range greedy {
		lp := refLogProbs(m, nil, seq)
		last := lp[len(lp)-1]
		best := 0
		for i := range last {
			if last[i] > last[best] {
				best = i
			}
		}
		if tok != best {
			t.Fatalf("greedy token %d, reference argmax %d", tok, best)
		}
		seq = append(seq, tok)
	}
	a, _ := Generate(ctx, m, prompt, GenerateConfig{MaxTokens: 20, Temperature: 1, TopP: 0.9, Seed: 3})
	b, _ := Generate(ctx, m, prompt, GenerateConfig{MaxTokens: 20, Temperature: 1, TopP: 0.9, Seed: 3})
	if fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 20 {
		t.Errorf("seeded sampling not repeatable: %v vs %v", a, b)
	}
	// The context bounds generation.
	long, err := Generate(ctx, m, testIDs(30, m.Config.VocabSize, 1), GenerateConfig{MaxTokens: 10})
	if err != nil || len(long) != 3 {
		t.Errorf("near a full context: %d tokens, %v (want 3 = 32 - 30 + 1)", len(long), err)
	}
	if _, err := Generate(ctx, m, testIDs(33, m.Config.VocabSize, 1), GenerateConfig{MaxTokens: 1}); err == nil {
		t.Error("a prompt longer than the context was accepted")
	}
}
