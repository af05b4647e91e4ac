package model

import (
	"encoding/json"
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model/safetensors"
)

func TestAdapterLayout(t *testing.T) {
	c := tinyConfig()
	lc := LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.05, Targets: []string{"v_proj", "q_proj", "down_proj"}}
	ad, err := NewAdapter(c, lc, 7)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	digest, err := ad.Save(dir)
	if err != nil {
		t.Fatal(err)
	}
	// adapter_config.json has PEFT's keys and values.
	var pc map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, AdapterConfigFile))
	if err := json.Unmarshal(b, &pc); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"peft_type": "LORA", "r": 4.0, "lora_alpha": 8.0, "lora_dropout": 0.05,
		"bias": "none", "task_type": "CAUSAL_LM", "fan_in_fan_out": false, "inference_mode": true,
		"init_lora_weights": true, "use_rslora": false, "use_dora": false} {
		if pc[k] != want {
			t.Errorf("adapter_config.json %s = %v, want %v", k, pc[k], want)
		}
	}
	// Every field peft.LoraConfig reads to rebuild the adapter is present
	// (base_model_name_or_path may be empty, but not absent).
	for _, k := range []string{"peft_type", "r", "lora_alpha", "target_modules", "lora_dropout", "bias", "task_type",
		"base_model_name_or_path", "fan_in_fan_out", "inference_mode", "modules_to_save", "layers_to_transform"} {
		if _, ok := pc[k]; !ok {
			t.Errorf("adapter_config.json has no %s", k)
		}
	}
	if tm, _ := json.Marshal(pc["target_modules"]); string(tm) != `["down_proj","q_proj","v_proj"]` {
		t.Errorf("target_modules = %s", tm)
	}
	// Tensor names and shapes as PEFT saves them.
	f, err := safetensors.Open(filepath.Join(dir, AdapterWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string][]int{
		"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {4, 16},
		"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": {16, 4},
		"base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight": {4, 16},
		"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight": {8, 4},
		"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight":    {4, 24},
		"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight":    {16, 4},
	}
	if len(f.Tensors()) != 12 {
		t.Errorf("%d tensors, want 12 (2 layers × 3 targets × A, B)", len(f.Tensors()))
	}
	for n, s := range want {
		ti, ok := f.Info(n)
		if !ok || !slices.Equal(ti.Shape, s) || ti.DType != safetensors.F32 {
			t.Errorf("%s: got %+v, want F32 %v", n, ti, s)
		}
	}
	// B is zero; A is within the Kaiming-uniform bound 1/sqrt(in).
	for n, tt := range ad.Tensors {
		if strings.Contains(n, "lora_B") {
			for _, v := range tt.Data {
				if v != 0 {
					t.Fatalf("%s not zero-initialised", n)
				}
			}
			continue
		}
		bound := 1 / math.Sqrt(float64(tt.Shape[1]))
		var mx float64
		for _, v := range tt.Data {
			mx = math.Max(mx, math.Abs(float64(v)))
		}
		if mx > bound || mx < bound/2 {
			t.Errorf("%s: max |A| %g, want close to the bound %g", n, mx, bound)
		}
	}
	if d, _ := DigestPath(dir); d != digest {
		t.Errorf("folder digest %s, Save returned %s", d, digest)
	}
	got, err := LoadAdapter(dir, c)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d != digest {
		t.Error("adapter changed in a save/load round trip")
	}
	if !slices.Equal(got.Config.Targets, []string{"down_proj", "q_proj", "v_proj"}) || got.Config.Scaling() != 2 {
		t.Errorf("loaded config %+v", got.Config)
	}
}

func TestMergeFoldsScaledBA(t *testing.T) {
	c := tinyConfig()
	m, _ := New(c, 1)
	lc := LoRAConfig{Rank: 2, Alpha: 3, Targets: []string{"o_proj"}}
	ad, _ := NewAdapter(c, lc, 1)
	an, bn := LoRANames(ProjName(1, "o_proj"))
	for i := range ad.Tensors[bn].Data {
		ad.Tensors[bn].Data[i] = float32(i%5) - 2
	}
	before, _ := m.Digest()
	mm, err := m.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := m.Digest(); after != before {
		t.Fatal("Merge modified the base model")
	}
	W0, W1 := m.Tensors[ProjName(1, "o_proj")], mm.Tensors[ProjName(1, "o_proj")]
	A, B := ad.Tensors[an], ad.Tensors[bn]
	out, in := W0.Shape[0], W0.Shape[1]
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			var ba float64
			for k := 0; k < 2; k++ {
				ba += float64(B.Data[o*2+k]) * float64(A.Data[k*in+i])
			}
			want := float64(W0.Data[o*in+i]) + 1.5*ba
			if math.Abs(float64(W1.Data[o*in+i])-want) > 1e-6 {
				t.Fatalf("W[%d][%d] = %g, want %g", o, i, W1.Data[o*in+i], want)
			}
		}
	}
	if !slices.Equal(mm.Tensors[ProjName(0, "q_proj")].Data, m.Tensors[ProjName(0, "q_proj")].Data) {
		t.Error("Merge changed a projection that has no adapter")
	}
}

func TestBadAdapters(t *testing.T) {
	c := tinyConfig()
	lc := LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}}
	qa, qb := LoRANames(ProjName(0, "q_proj"))
	cases := []struct {
		name   string
		break_ func(dir string, ad *Adapter)
		want   []string
	}{
		{"wrong peft type", func(dir string, ad *Adapter) { editAdapterConfig(dir, "peft_type", "IA3") }, []string{AdapterConfigFile, "peft_type"}},
		{"bias", func(dir string, ad *Adapter) { editAdapterConfig(dir, "bias", "all") }, []string{"bias"}},
		{"fan in fan out", func(dir string, ad *Adapter) { editAdapterConfig(dir, "fan_in_fan_out", true) }, []string{"fan_in_fan_out"}},
		{"unknown target", func(dir string, ad *Adapter) { editAdapterConfig(dir, "target_modules", []string{"q_proj", "wq"}) }, []string{"wq"}},
		{"zero rank", func(dir string, ad *Adapter) { editAdapterConfig(dir, "r", 0) }, []string{"rank"}},
		{"rank contradicts weights", func(dir string, ad *Adapter) { editAdapterConfig(dir, "r", 2) }, []string{AdapterWeightsFile, "r=2"}},
		{"missing B", func(dir string, ad *Adapter) {
			delete(ad.Tensors, qb)
			ad.Save(dir)
		}, []string{AdapterWeightsFile, qb, "missing"}},
		{"misshapen A", func(dir string, ad *Adapter) {
			ad.Tensors[qa] = &Tensor{Shape: []int{4, 15}, Data: make([]float32, 60)}
			ad.Save(dir)
		}, []string{qa, "[4 15]", "[4 16]"}},
		{"extra tensor", func(dir string, ad *Adapter) {
			n, _ := LoRANames(ProjName(0, "k_proj"))
			ad.Tensors[n] = &Tensor{Shape: []int{4, 16}, Data: make([]float32, 64)}
			ad.Save(dir)
		}, []string{"k_proj.lora_A", "not a LoRA weight"}},
		{"truncated weights", func(dir string, ad *Adapter) {
			p := filepath.Join(dir, AdapterWeightsFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o644)
		}, []string{AdapterWeightsFile}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ad, _ := NewAdapter(c, lc, 1)
			dir := t.TempDir()
			if _, err := ad.Save(dir); err != nil {
				t.Fatal(err)
			}
			tc.break_(dir, ad)
			_, err := LoadAdapter(dir, c)
			if err == nil {
				t.Fatal("LoadAdapter succeeded")
			}
			if !errors.Is(err, ErrAdapter) && !errors.Is(err, safetensors.ErrFormat) {
				t.Errorf("error %v wraps neither ErrAdapter nor safetensors.ErrFormat", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func editAdapterConfig(dir, key string, v any) {
	p := filepath.Join(dir, AdapterConfigFile)
	b, _ := os.ReadFile(p)
	var m map[string]any
	json.Unmarshal(b, &m)
	m[key] = v
	b, _ = json.Marshal(m)
	os.WriteFile(p, b, 0o644)
}

// TestPEFTNamesWithAdapterName accepts ...lora_A.default.weight, which
// some PEFT versions save.
func TestPEFTNamesWithAdapterName(t *testing.T) {
	c := tinyConfig()
	lc := LoRAConfig{Rank: 2, Alpha: 2, Targets: []string{"q_proj"}}
	ad, _ := NewAdapter(c, lc, 1)
	dir := t.TempDir()
	ad.Save(dir)
	var ts []safetensors.Tensor
	for _, n := range slices.Sorted(maps.Keys(ad.Tensors)) {
		st, _ := safetensors.FromFloat32(strings.Replace(strings.Replace(n, ".lora_A.", ".lora_A.default.", 1), ".lora_B.", ".lora_B.default.", 1),
			safetensors.F16, ad.Tensors[n].Shape, ad.Tensors[n].Data)
		ts = append(ts, st)
	}
	safetensors.WriteFile(filepath.Join(dir, AdapterWeightsFile), ts, map[string]string{"format": "pt"})
	if _, err := LoadAdapter(dir, c); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseAdapterConfig(f *testing.F) {
	f.Add([]byte(`{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj","v_proj"],"bias":"none","task_type":"CAUSAL_LM"}`))
	f.Add([]byte(`{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":"q_proj,v_proj"}`))
	f.Add([]byte(`{"peft_type":"LORA","r":-1,"rank_pattern":{"x":2}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		lc, _, err := ParseAdapterConfig("adapter_config.json", data)
		if err != nil {
			return
		}
		if err := lc.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		if s := lc.Scaling(); math.IsNaN(s) || math.IsInf(s, 0) || s <= 0 {
			t.Fatalf("scaling %g", s)
		}
	})
}

// TestMergeShared: MergeShared gives Merge's weights, copies only the
// adapted projections (widening a bfloat16-held one) and shares the rest.
func TestMergeShared(t *testing.T) {
	c := tinyConfig()
	m, _ := New(c, 1)
	dir := t.TempDir()
	if _, err := m.Save(dir, safetensors.BF16); err != nil {
		t.Fatal(err)
	}
	bf, err := LoadBF16(dir)
	if err != nil {
		t.Fatal(err)
	}
	f32, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ad, _ := NewAdapter(c, LoRAConfig{Rank: 2, Alpha: 3, Targets: []string{"o_proj", "up_proj"}}, 1)
	for _, tn := range ad.Tensors {
		for i := range tn.Data {
			tn.Data[i] = float32(i%7)/7 - 0.4
		}
	}
	want, err := f32.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	for _, base := range []*Model{f32, bf} {
		before, _ := base.Digest()
		got, err := base.MergeShared(ad)
		if err != nil {
			t.Fatal(err)
		}
		if after, _ := base.Digest(); after != before {
			t.Fatal("MergeShared modified the base model")
		}
		adapted := map[string]bool{}
		for _, w := range AdaptedWeights(&c, &ad.Config) {
			adapted[w] = true
		}
		for _, name := range want.Names() {
			g := got.Tensors[name]
			if !slices.Equal(g.Float32s(), want.Tensors[name].Data) {
				t.Fatalf("%s: MergeShared differs from Merge", name)
			}
			if shared := g == base.Tensors[name]; shared == adapted[name] {
				t.Errorf("%s: shared with the base %t, adapted %t", name, shared, adapted[name])
			}
		}
	}
	if _, err := bf.MergeShared(&Adapter{Config: ad.Config, Tensors: map[string]*Tensor{}}); err == nil {
		t.Error("MergeShared took an adapter with no tensors")
	}
}
