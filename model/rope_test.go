package model

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRopeInvFreqReference checks RopeInvFreq against
// testdata/rope_reference.json, written by testdata/rope_reference.py from
// transformers' rope formulas with torch's float32 rounding emulated.
func TestRopeInvFreqReference(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "rope_reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name       string          `json:"name"`
		RopeTheta  float64         `json:"rope_theta"`
		HeadDim    int             `json:"head_dim"`
		Scaling    json.RawMessage `json:"rope_scaling"`
		InvFreq    []float64       `json:"inv_freq"`
		InvFreqF64 []float64       `json:"inv_freq_f64"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 4 {
		t.Fatalf("%d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			c := DefaultConfig()
			c.RopeTheta, c.HeadDim, c.NumAttentionHeads, c.HiddenSize = tc.RopeTheta, tc.HeadDim, 2, 2*tc.HeadDim
			if err := json.Unmarshal(tc.Scaling, &c.RopeScaling); err != nil {
				t.Fatal(err)
			}
			got := c.RopeInvFreq()
			if len(got) != len(tc.InvFreq) {
				t.Fatalf("%d frequencies, want %d", len(got), len(tc.InvFreq))
			}
			for j, g := range got {
				// float32 as torch computes it, within a few ulp:
				// RopeInvFreq rounds 1/θ^e once from float64, torch
				// rounds θ^e and then its reciprocal, and llama3's
				// smoothing carries that ulp through four more roundings.
				if w := tc.InvFreq[j]; math.Abs(float64(g)-w) > 6e-7*w {
					t.Errorf("inv_freq[%d] = %.9g, reference %.9g", j, g, w)
				}
				if w := tc.InvFreqF64[j]; math.Abs(float64(g)-w) > 1e-5*w {
					t.Errorf("inv_freq[%d] = %.9g, float64 formula %.9g", j, g, w)
				}
			}
		})
	}
}

func TestRopeCosSinUsesScaling(t *testing.T) {
	c := tinyConfig()
	plain, _ := c.RopeCosSin(8)
	c.RopeScaling = &RopeScaling{Type: "linear", Factor: 2}
	scaled, _ := c.RopeCosSin(8)
	hd := c.HeadDimension()
	// Linear scaling by 2: position t of the scaled table is position t/2
	// of the plain one.
	for t2 := 0; t2 < 8; t2 += 2 {
		for j := 0; j < hd; j++ {
			if d := math.Abs(scaled[t2*hd+j] - plain[t2/2*hd+j]); d > 1e-6 {
				t.Fatalf("cos at %d,%d = %g, want %g", t2, j, scaled[t2*hd+j], plain[t2/2*hd+j])
			}
		}
	}
}

// TestPublishedConfigs parses config.json files as published on the Hugging
// Face Hub (testdata/configs).
func TestPublishedConfigs(t *testing.T) {
	load := func(name string) (Config, error) {
		return LoadConfigJSON(filepath.Join("testdata", "configs", name))
	}
	c, err := load("llama-3.2-1b.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDimension() != 64 || c.KVHeads() != 8 || !c.TieWordEmbeddings || c.RopeScaling.Kind() != "llama3" ||
		c.RopeScaling.Factor != 32 || c.RopeScaling.OriginalMaxPositionEmbeddings != 8192 || c.VocabSize != 128256 {
		t.Errorf("Llama-3.2-1B read as %+v, scaling %+v", c, c.RopeScaling)
	}
	if inv := c.RopeInvFreq(); inv[0] != 1 || math.Abs(float64(inv[31])-9.418306490260875e-08) > 1e-13 {
		t.Errorf("Llama-3.2-1B inv_freq[0], [31] = %g, %g", inv[0], inv[31])
	}
	c, err = load("tinyllama-1.1b-chat-v1.0.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDimension() != 64 || c.KVHeads() != 4 || c.TieWordEmbeddings || c.RopeScaling != nil || c.NumHiddenLayers != 22 {
		t.Errorf("TinyLlama read as %+v", c)
	}
	c, err = load("smollm2-135m.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.HeadDimension() != 64 || c.KVHeads() != 3 || !c.TieWordEmbeddings || c.RopeTheta != 100000 || c.HiddenSize != 576 {
		t.Errorf("SmolLM2-135M read as %+v", c)
	}
	if _, err := load("llama-2-7b-hf.json"); err != nil {
		t.Fatal(err)
	}
	// Mistral 7B v0.3: Llama's architecture under another name, no
	// sliding window.
	c, err = load("mistral-7b-v0.3.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.ModelType != "mistral" || c.KVHeads() != 8 || c.RopeTheta != 1e6 || c.VocabSize != 32768 {
		t.Errorf("Mistral v0.3 read as %+v", c)
	}
	// Mistral 7B v0.1: a 4096-token sliding window, which fedtune does not
	// implement.
	_, err = load("mistral-7b-v0.1.json")
	if err == nil || !errors.Is(err, ErrConfig) {
		t.Fatalf("Mistral v0.1 config: %v", err)
	}
	for _, w := range []string{"sliding_window", "4096", "not implemented"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Mistral v0.1 config error %q does not mention %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "model_type") {
		t.Errorf("Mistral v0.1 refused for its model_type: %v", err)
	}
}

func TestConfigJSONRefusals(t *testing.T) {
	base, err := os.ReadFile(filepath.Join("testdata", "configs", "llama-3.2-1b.json"))
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) string {
		if !strings.Contains(string(base), old) {
			t.Fatalf("%q not in the base config", old)
		}
		return strings.Replace(string(base), old, new, 1)
	}
	cases := []struct {
		name, json string
		want       []string
	}{
		{"attention bias", edit(`"attention_bias": false`, `"attention_bias": true`), []string{"attention_bias:", "not supported"}},
		{"mlp bias", edit(`"mlp_bias": false`, `"mlp_bias": true`), []string{"mlp_bias:", "not supported"}},
		{"attention dropout", edit(`"attention_dropout": 0.0`, `"attention_dropout": 0.1`), []string{"attention_dropout", "0.1"}},
		{"unknown key", edit(`"use_cache": true`, `"use_cache": true, "layer_types": ["full_attention"]`), []string{"layer_types", "not a LlamaConfig key"}},
		{"rope type yarn", edit(`"rope_type": "llama3"`, `"rope_type": "yarn"`), []string{"rope_scaling", `"yarn" is not supported`}},
		{"rope types disagree", edit(`"rope_type": "llama3"`, `"rope_type": "llama3", "type": "linear"`), []string{"disagree"}},
		{"rope unknown key", edit(`"rope_type": "llama3"`, `"rope_type": "llama3", "beta_fast": 32`), []string{"rope_scaling", "beta_fast"}},
		{"llama3 missing original", edit(`"original_max_position_embeddings": 8192,`, ``), []string{"rope_scaling.original_max_position_embeddings"}},
		{"llama3 factors inverted", edit(`"high_freq_factor": 4.0`, `"high_freq_factor": 0.5`), []string{"rope_scaling.high_freq_factor"}},
		{"llama3 factor below 1", edit(`"factor": 32.0`, `"factor": 0.5`), []string{"rope_scaling.factor", "≥ 1"}},
		{"linear with llama3 keys", edit(`"rope_type": "llama3"`, `"rope_type": "linear"`), []string{"rope_scaling.low_freq_factor", `not a parameter of rope_type "linear"`}},
		{"mistral with a llama architecture", edit(`"model_type": "llama"`, `"model_type": "mistral"`), []string{"architectures", "MistralForCausalLM"}},
		{"other model type", edit(`"model_type": "llama"`, `"model_type": "qwen2"`), []string{"model_type", `"qwen2"`}},
		{"head dim odd", edit(`"head_dim": 64`, `"head_dim": 63`), []string{"head_dim", "even"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfigJSON("config.json", []byte(tc.json))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrConfig) || !strings.HasPrefix(err.Error(), "config.json") {
				t.Errorf("error %v does not wrap ErrConfig or name the file", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Accepted variants: linear scaling alone, head_dim other than
	// hidden/heads, sliding_window null.
	for _, ok := range []string{
		edit(`"rope_scaling": {`, `"rope_scaling": {"type": "linear", "factor": 2.0}, "x_rope_scaling": {`),
		edit(`"head_dim": 64`, `"head_dim": 128`),
		edit(`"use_cache": true`, `"use_cache": true, "sliding_window": null`),
	} {
		if strings.Contains(ok, "x_rope_scaling") {
			// drop the renamed llama3 block: keep the JSON valid
			i := strings.Index(ok, `, "x_rope_scaling": {`)
			j := strings.Index(ok[i:], "}") + i
			ok = ok[:i] + ok[j+1:]
		}
		c, err := ParseConfigJSON("config.json", []byte(ok))
		if err != nil {
			t.Fatalf("%v", err)
		}
		if c.HeadDim == 128 && c.HeadDimension() != 128 {
			t.Errorf("head_dim 128 read as %d", c.HeadDimension())
		}
	}
}

// TestPublishedConfigRoundTrip: a published config written back by fedtune
// reads the same (rope_scaling included).
func TestPublishedConfigRoundTrip(t *testing.T) {
	c, err := LoadConfigJSON(filepath.Join("testdata", "configs", "llama-3.2-1b.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.encodeJSON()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConfigJSON("again", b)
	if err != nil {
		t.Fatal(err)
	}
	if *c2.RopeScaling != *c.RopeScaling || c2.HeadDim != 64 {
		t.Errorf("round trip: %+v, want %+v", c2.RopeScaling, c.RopeScaling)
	}
	if !strings.Contains(string(b), `"rope_type": "llama3"`) {
		t.Errorf("config.json written without rope_type:\n%s", b)
	}
}
