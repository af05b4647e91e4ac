package modeltest

import (
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// RNG returns the deterministic random stream for one name, as model's
// seeded initialisation draws it.
func RNG(seed uint64, name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// RefLogProbs is an independent float64 reference of LlamaForCausalLM's
// forward pass, written directly from the transformers modelling code's
// definitions with plain loops: it returns log-softmax(logits) for each
// position of ids. ad, if non-nil, is applied unmerged (W x + s·B A x).
func RefLogProbs(m *model.Model, ad *model.Adapter, ids []int) [][]float64 {
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
			an, bn := model.LoRANames(name)
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
			f := RefInvFreq(&c, j%half, hd)
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
	emb := w(model.EmbedName)
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
	head := model.LMHeadName
	if c.TieWordEmbeddings {
		head = model.EmbedName
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

// TinyConfig returns a small config; mutate to make Variants.
func TinyConfig() model.Config {
	c := model.DefaultConfig()
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

// Randomise gives the norms non-trivial values so they are tested too.
func Randomise(m *model.Model, seed uint64) {
	for _, name := range m.Names() {
		r := RNG(seed+7, name)
		t := m.Tensors[name]
		if len(t.Shape) == 1 {
			for i := range t.Data {
				t.Data[i] = float32(0.5 + r.Float64())
			}
		}
	}
}

// MaxDiff returns the largest absolute difference between a and b.
func MaxDiff(a, b [][]float64) float64 {
	var m float64
	for i := range a {
		for j := range a[i] {
			m = math.Max(m, math.Abs(a[i][j]-b[i][j]))
		}
	}
	return m
}

// RefInvFreq is rotary inverse frequency i of head dimension hd in float64,
// with c's rope_scaling applied as transformers' formulas state it
// (_compute_linear_scaling_rope_parameters, _compute_llama3_parameters).
func RefInvFreq(c *model.Config, i, hd int) float64 {
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

// TinyLlama3Scaling is llama3 rope scaling for TinyConfig's head dimension
// 4 (frequencies 1 and 0.01): the first is kept, the second smoothed.
func TinyLlama3Scaling() *model.RopeScaling {
	return &model.RopeScaling{RopeType: "llama3", Factor: 4, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 1024}
}

// Variant is a model shape and the dtype its checkpoint is stored in.
type Variant struct {
	Name  string
	Mod   func(*model.Config)
	DType safetensors.DType
}

// Variants are the architectures every forward pass is tested on: MHA,
// GQA, MQA, tied heads, F16 and BF16 checkpoints, other rope_theta and
// eps, an explicit head_dim, llama3 and linear rope scaling, one layer.
var Variants = []Variant{
	{"mha", func(c *model.Config) { c.NumKeyValueHeads = 4 }, safetensors.F32},
	{"gqa", func(c *model.Config) {}, safetensors.F32},
	{"mqa", func(c *model.Config) { c.NumKeyValueHeads = 1 }, safetensors.F32},
	{"tied", func(c *model.Config) { c.TieWordEmbeddings = true }, safetensors.F32},
	{"f16", func(c *model.Config) {}, safetensors.F16},
	{"bf16-tied", func(c *model.Config) { c.TieWordEmbeddings = true }, safetensors.BF16},
	{"rope-theta-eps", func(c *model.Config) { c.RopeTheta = 500000; c.RMSNormEps = 1e-2 }, safetensors.F32},
	{"explicit-head-dim", func(c *model.Config) { c.HeadDim = 6; c.NumKeyValueHeads = 1 }, safetensors.F32},
	{"rope-llama3", func(c *model.Config) { c.RopeScaling = TinyLlama3Scaling() }, safetensors.F32},
	{"rope-linear", func(c *model.Config) { c.RopeScaling = &model.RopeScaling{Type: "linear", Factor: 2} }, safetensors.F32},
	{"one-layer-mha-tied", func(c *model.Config) {
		c.NumHiddenLayers = 1
		c.NumKeyValueHeads = 0
		c.TieWordEmbeddings = true
	}, safetensors.BF16},
}

// VariantModel builds a random model of Variant v, saves it in v.DType and
// loads it back, so the forward runs on what a checkpoint of that dtype holds.
func VariantModel(t *testing.T, v Variant, seed uint64) *model.Model {
	t.Helper()
	c := TinyConfig()
	v.Mod(&c)
	m, err := model.New(c, seed)
	if err != nil {
		t.Fatal(err)
	}
	Randomise(m, seed)
	dir := filepath.Join(t.TempDir(), v.Name)
	if _, err := m.Save(dir, v.DType); err != nil {
		t.Fatal(err)
	}
	lm, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tol := map[safetensors.DType]float64{safetensors.F32: 0, safetensors.F16: 1e-3, safetensors.BF16: 8e-3}[v.DType]
	for name, want := range m.Tensors {
		got := lm.Tensors[name]
		for i := range want.Data {
			if d := math.Abs(float64(got.Data[i] - want.Data[i])); d > tol*math.Max(1, math.Abs(float64(want.Data[i]))) {
				t.Fatalf("%s: %s[%d] = %g after a %s round trip, want %g", v.Name, name, i, got.Data[i], v.DType, want.Data[i])
			}
		}
	}
	return lm
}

// IDs returns n token ids below V drawn from seed.
func IDs(n, V int, seed uint64) []int {
	r := RNG(seed, "ids")
	ids := make([]int, n)
	for i := range ids {
		ids[i] = r.IntN(V)
	}
	return ids
}

// LogProbs turns logits [n, V] (row-major float32, as the forward passes
// return them) into log-softmax rows in float64.
func LogProbs(logits []float32, V int) [][]float64 {
	out := make([][]float64, len(logits)/V)
	for i := range out {
		row := logits[i*V : (i+1)*V]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v) - mx)
		}
		out[i] = make([]float64, V)
		for j, v := range row {
			out[i][j] = float64(v) - mx - math.Log(z)
		}
	}
	return out
}

// AdaptedModel returns the tiny model (Randomise'd) and a LoRA adapter on
// k, o, up and v with non-zero A and B, for tests of an adapter's forward.
func AdaptedModel(t testing.TB) (*model.Model, *model.Adapter) {
	t.Helper()
	c := TinyConfig()
	m, err := model.New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	Randomise(m, 1)
	lc := model.LoRAConfig{Rank: 3, Alpha: 6, Targets: []string{"k_proj", "o_proj", "up_proj", "v_proj"}}
	ad, err := model.NewAdapter(c, lc, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range slices.Sorted(maps.Keys(ad.Tensors)) {
		r := RNG(4, n)
		for i := range ad.Tensors[n].Data {
			ad.Tensors[n].Data[i] = float32(r.NormFloat64() * 0.2)
		}
	}
	return m, ad
}
