package model

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestShippedModelConfigs(t *testing.T) {
	files, err := filepath.Glob("../configs/models/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("want configs/models/*.yaml (at least 3), got %v, %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := LoadConfigYAML(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := New(c, 1)
			if err != nil {
				t.Fatal(err)
			}
			if m.NumParams() == 0 {
				t.Fatal("no parameters")
			}
		})
	}
	c, err := LoadConfigYAML("../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.VocabSize != 256 || c.HiddenSize != 64 || c.NumHiddenLayers != 2 || c.NumAttentionHeads != 4 ||
		c.KVHeads() != 2 || c.IntermediateSize != 172 || c.MaxPositionEmbeddings != 128 || c.HeadDimension() != 16 {
		t.Errorf("tiny.yaml = %+v, not the documented tiny shape", c)
	}
}

func TestConfigYAMLErrors(t *testing.T) {
	base := "model_type: llama\nvocab_size: 256\nhidden_size: 64\nintermediate_size: 172\nnum_hidden_layers: 2\nnum_attention_heads: 4\nnum_key_value_heads: 2\n"
	cases := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown key", base + "hidden_sise: 3\n", []string{`bad.yaml:8: unknown key "hidden_sise"`}},
		{"kv heads do not divide", strings.Replace(base, "num_key_value_heads: 2", "num_key_value_heads: 3", 1),
			[]string{"bad.yaml", "line 7", "num_key_value_heads", "does not divide num_attention_heads 4"}},
		{"heads do not divide hidden", strings.Replace(base, "num_attention_heads: 4", "num_attention_heads: 5", 1),
			[]string{"line 6", "num_attention_heads", "does not divide hidden_size 64"}},
		{"negative eps and bad act", base + "rms_norm_eps: -1\nhidden_act: gelu\n",
			[]string{"line 8: rms_norm_eps", "line 9: hidden_act", "silu"}},
		{"missing sizes", "model_type: llama\n", []string{"vocab_size: must be positive", "hidden_size", "num_hidden_layers"}},
		{"rope scaling", base + "rope_scaling: {type: dynamic, factor: 2}\n", []string{"rope_scaling", "not supported"}},
		{"rope scaling key", base + "rope_scaling: {type: linear, factor: 2, beta_fast: 32}\n", []string{"beta_fast"}},
		{"wrong type", base + "vocab_size: many\n", []string{"bad.yaml:8"}},
		{"odd head dim", base + "head_dim: 7\n", []string{"head_dim", "even"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfigYAML("bad.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConfigJSONRoundTrip(t *testing.T) {
	c := tinyConfig()
	bos := 1
	c.BOSTokenID = &bos
	c.EOSTokenID = TokenIDs{2, 3}
	b, err := c.encodeJSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseConfigJSON("config.json", b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := got.encodeJSON()
	if string(b) != string(b2) {
		t.Errorf("round trip changed config.json:\n%s\n%s", b, b2)
	}
}

// TestHFConfigJSON reads a config.json as transformers writes it (extra
// keys ignored, eos_token_id as a number, torch_dtype bfloat16).
func TestHFConfigJSON(t *testing.T) {
	data, err := os.ReadFile("testdata/hf_config.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfigJSON("testdata/hf_config.json", data)
	if err != nil {
		t.Fatal(err)
	}
	if c.HiddenSize != 2048 || c.KVHeads() != 8 || c.HeadDimension() != 64 || !c.TieWordEmbeddings ||
		c.RopeTheta != 500000 || c.RMSNormEps != 1e-5 || len(c.EOSTokenID) != 1 || c.EOSTokenID[0] != 128001 {
		t.Errorf("decoded %+v", c)
	}
}

func FuzzParseConfigJSON(f *testing.F) {
	c := tinyConfig()
	b, _ := c.encodeJSON()
	f.Add(b)
	if hf, err := os.ReadFile("testdata/hf_config.json"); err == nil {
		f.Add(hf)
	}
	f.Add([]byte(`{"hidden_size": 64, "num_attention_heads": 0}`))
	f.Add([]byte(`{"eos_token_id": [1, "x"]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfigJSON("config.json", data)
		if err != nil {
			return
		}
		// A config that validates must give consistent shapes and survive
		// a round trip unchanged.
		for name, s := range c.TensorShapes() {
			if prod(s) < 0 {
				t.Fatalf("%s: negative size %v", name, s)
			}
		}
		b, err := c.encodeJSON()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := ParseConfigJSON("config.json", b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		b2, _ := c2.encodeJSON()
		if string(b) != string(b2) {
			t.Fatalf("round trip changed:\n%s\n%s", b, b2)
		}
		_ = json.Valid(b)
	})
}
