package model

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model/safetensors"
)

// savedTiny writes a small random model to a fresh folder.
func savedTiny(t *testing.T, mod func(*Config)) (string, *Model) {
	t.Helper()
	c := tinyConfig()
	if mod != nil {
		mod(&c)
	}
	m, err := New(c, 42)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

// rawSafetensors builds a file from a literal header and data length.
func rawSafetensors(header string, data int) []byte {
	b := make([]byte, 8, 8+len(header)+data)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

func TestSaveLoadDigest(t *testing.T) {
	dir, m := savedTiny(t, nil)
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range m.Tensors {
		if !slices.Equal(got.Tensors[name].Data, want.Data) {
			t.Fatalf("%s changed in a save/load round trip", name)
		}
	}
	d1, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := DigestPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	d3, err := DigestPath(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 || d1 != d3 {
		t.Errorf("digests differ: model %s, folder %s, file %s", d1, d2, d3)
	}
	// Same seed, same weights; different seed, different weights.
	m2, _ := New(m.Config, 42)
	m3, _ := New(m.Config, 43)
	if d, _ := m2.Digest(); d != d1 {
		t.Error("same seed gave a different model")
	}
	if d, _ := m3.Digest(); d == d1 {
		t.Error("different seeds gave the same model")
	}
}

// TestShardedLoad splits a model into two shards with an index, as
// transformers' save_pretrained does for large models.
func TestShardedLoad(t *testing.T) {
	_, m := savedTiny(t, nil)
	dir := t.TempDir()
	names := m.Names()
	idx := map[string]any{"metadata": map[string]any{"total_size": m.NumParams() * 4}}
	wm := map[string]string{}
	for part, ns := range [][]string{names[:len(names)/2], names[len(names)/2:]} {
		file := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[part]
		var ts []safetensors.Tensor
		for _, n := range ns {
			st, _ := safetensors.FromFloat32(n, safetensors.BF16, m.Tensors[n].Shape, m.Tensors[n].Data)
			ts = append(ts, st)
			wm[n] = file
		}
		if _, err := safetensors.WriteFile(filepath.Join(dir, file), ts, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	idx["weight_map"] = wm
	b, _ := json.Marshal(idx)
	os.WriteFile(filepath.Join(dir, WeightsIndex), b, 0o644)
	cj, _ := m.Config.encodeJSON()
	os.WriteFile(filepath.Join(dir, ConfigFile), cj, 0o644)
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.NumParams() != m.NumParams() {
		t.Fatalf("loaded %d params, want %d", got.NumParams(), m.NumParams())
	}
	// The folder digest covers both shards and equals the digest of the
	// same BF16 tensors written as one canonical file.
	d, err := DigestPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := tensorsTo(m.Tensors, safetensors.BF16)
	want, _ := safetensors.Digest(all)
	if d != want {
		t.Errorf("sharded digest %s, want %s", d, want)
	}
}

// TestBadWeights: each malformed or contradictory checkpoint is a clear
// error naming the file and the tensor or field, never a panic.
func TestBadWeights(t *testing.T) {
	emb := EmbedName
	q0 := ProjName(0, "q_proj")
	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string, m *Model)
		want   []string
		is     error
	}{
		{"truncated file", func(t *testing.T, dir string, m *Model) {
			p := filepath.Join(dir, WeightsFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-100], 0o644)
		}, []string{WeightsFile, "truncated"}, safetensors.ErrFormat},
		{"header offsets overlap", func(t *testing.T, dir string, m *Model) {
			h := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`
			os.WriteFile(filepath.Join(dir, WeightsFile), rawSafetensors(h, 12), 0o644)
		}, []string{WeightsFile, `"b"`, "overlap"}, safetensors.ErrFormat},
		{"offsets past the end", func(t *testing.T, dir string, m *Model) {
			h := `{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`
			os.WriteFile(filepath.Join(dir, WeightsFile), rawSafetensors(h, 8), 0o644)
		}, []string{WeightsFile, `"a"`, "past the end"}, safetensors.ErrFormat},
		{"unknown dtype", func(t *testing.T, dir string, m *Model) {
			h := `{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,4]}}`
			os.WriteFile(filepath.Join(dir, WeightsFile), rawSafetensors(h, 4), 0o644)
		}, []string{WeightsFile, `"a"`, "F12"}, safetensors.ErrFormat},
		{"integer tensor", func(t *testing.T, dir string, m *Model) {
			rewrite(t, dir, m, func(ts []safetensors.Tensor) []safetensors.Tensor {
				for i := range ts {
					if ts[i].Name == FinalNormName {
						ts[i].DType = safetensors.I32
					}
				}
				return ts
			})
		}, []string{WeightsFile, FinalNormName, "not a float"}, ErrWeights},
		{"missing tensor", func(t *testing.T, dir string, m *Model) {
			delete(m.Tensors, q0)
			rewrite(t, dir, m, nil)
		}, []string{WeightsFile, q0, "missing"}, ErrWeights},
		{"misshapen tensor", func(t *testing.T, dir string, m *Model) {
			m.Tensors[q0] = &Tensor{Shape: []int{16, 15}, Data: make([]float32, 240)}
			rewrite(t, dir, m, nil)
		}, []string{WeightsFile, q0, "[16 15]", "[16 16]", "num_attention_heads=4"}, ErrWeights},
		{"unexpected tensor", func(t *testing.T, dir string, m *Model) {
			m.Tensors["model.layers.9.mlp.up_proj.weight"] = &Tensor{Shape: []int{2}, Data: make([]float32, 2)}
			rewrite(t, dir, m, nil)
		}, []string{"model.layers.9.mlp.up_proj.weight", "not part of"}, ErrWeights},
		{"hidden_size contradicts embedding", func(t *testing.T, dir string, m *Model) {
			editConfig(t, dir, func(c map[string]any) { c["hidden_size"] = 32 })
		}, []string{WeightsFile, LMHeadName, "[37 16]", "hidden_size=32", "[37 32]"}, ErrWeights},
		{"vocab_size contradicts embedding", func(t *testing.T, dir string, m *Model) {
			editConfig(t, dir, func(c map[string]any) { c["vocab_size"] = 40 })
		}, []string{LMHeadName, "vocab_size=40", "[40 16]"}, ErrWeights},
		{"kv heads do not divide heads", func(t *testing.T, dir string, m *Model) {
			editConfig(t, dir, func(c map[string]any) { c["num_key_value_heads"] = 3 })
		}, []string{ConfigFile, "num_key_value_heads", "does not divide"}, ErrConfig},
		{"config not JSON", func(t *testing.T, dir string, m *Model) {
			os.WriteFile(filepath.Join(dir, ConfigFile), []byte("{hidden_size: 3"), 0o644)
		}, []string{ConfigFile}, ErrConfig},
		{"untied config, no lm_head", func(t *testing.T, dir string, m *Model) {
			editConfig(t, dir, func(c map[string]any) { c["tie_word_embeddings"] = false })
		}, []string{LMHeadName, "missing"}, ErrWeights},
		{"no weights file", func(t *testing.T, dir string, m *Model) {
			os.Remove(filepath.Join(dir, WeightsFile))
		}, []string{WeightsFile, WeightsIndex}, os.ErrNotExist},
		{"index names a missing shard", func(t *testing.T, dir string, m *Model) {
			os.Remove(filepath.Join(dir, WeightsFile))
			os.WriteFile(filepath.Join(dir, WeightsIndex), []byte(`{"weight_map":{"`+emb+`":"gone.safetensors"}}`), 0o644)
		}, []string{"gone.safetensors"}, os.ErrNotExist},
		{"index escapes the folder", func(t *testing.T, dir string, m *Model) {
			os.Remove(filepath.Join(dir, WeightsFile))
			os.WriteFile(filepath.Join(dir, WeightsIndex), []byte(`{"weight_map":{"`+emb+`":"../x.safetensors"}}`), 0o644)
		}, []string{WeightsIndex, emb, "plain file name"}, ErrWeights},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, m := savedTiny(t, func(c *Config) { c.TieWordEmbeddings = tc.name == "untied config, no lm_head" })
			tc.break_(t, dir, m)
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
		})
	}
}

// rewrite re-saves m's tensors (after edit) as model.safetensors without
// any checks.
func rewrite(t *testing.T, dir string, m *Model, edit func([]safetensors.Tensor) []safetensors.Tensor) {
	t.Helper()
	ts, err := tensorsTo(m.Tensors, safetensors.F32)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		ts = edit(ts)
	}
	if _, err := safetensors.WriteFile(filepath.Join(dir, WeightsFile), ts, nil); err != nil {
		t.Fatal(err)
	}
}

func editConfig(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, ConfigFile)
	b, _ := os.ReadFile(p)
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	edit(c)
	b, _ = json.Marshal(c)
	os.WriteFile(p, b, 0o644)
}

// TestLoadBF16: LoadBF16 of a BF16 checkpoint (sharded, as transformers
// saves one) holds the matrices as bfloat16 and the norms as float32, with
// the values Load widens; digests, Save and Widened see the same weights;
// an F32 checkpoint loads as Load loads it.
func TestLoadBF16(t *testing.T) {
	_, m := savedTiny(t, func(c *Config) { c.TieWordEmbeddings = true })
	bfDir := t.TempDir()
	if _, err := m.Save(bfDir, safetensors.BF16); err != nil {
		t.Fatal(err)
	}
	f32, err := Load(bfDir)
	if err != nil {
		t.Fatal(err)
	}
	bf, err := LoadBF16(bfDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range f32.Names() {
		tb, tf := bf.Tensors[name], f32.Tensors[name]
		held := tb.Data == nil && tb.BF16 != nil
		if held != (len(tf.Shape) == 2) {
			t.Errorf("%s (shape %v): held as bfloat16 %t", name, tf.Shape, held)
		}
		if tb.Len() != len(tf.Data) || !slices.Equal(tb.Float32s(), tf.Data) {
			t.Errorf("%s: LoadBF16's values differ from Load's", name)
		}
	}
	if bf.NumParams() != f32.NumParams() {
		t.Errorf("NumParams %d, Load's %d", bf.NumParams(), f32.NumParams())
	}
	d1, err1 := bf.Digest()
	d2, err2 := f32.Digest()
	if err1 != nil || err2 != nil || d1 != d2 {
		t.Errorf("digest %s (%v), Load's %s (%v)", d1, err1, d2, err2)
	}
	w := bf.Widened()
	if w == bf || w.Tensors[EmbedName].Data == nil || w.Tensors[FinalNormName] != bf.Tensors[FinalNormName] {
		t.Error("Widened: want a new model, matrices widened, float32 tensors shared")
	}
	if f32.Widened() != f32 {
		t.Error("Widened of a float32 model is not the model itself")
	}
	out := t.TempDir()
	if _, err := bf.Save(out, safetensors.BF16); err != nil {
		t.Fatal(err)
	}
	a, _ := DigestPath(out)
	b, _ := DigestPath(bfDir)
	if a != b {
		t.Errorf("a LoadBF16 model saved as BF16 has digest %s, its source %s", a, b)
	}
	// An F32 checkpoint: nothing held as bfloat16.
	f32Dir, _ := savedTiny(t, nil)
	g, err := LoadBF16(f32Dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, tn := range g.Tensors {
		if tn.BF16 != nil {
			t.Errorf("%s of an F32 checkpoint held as bfloat16", name)
		}
	}
	// A tensor holding both forms, or the wrong count, fails Check.
	bad := bf.Widened()
	bad.Tensors[EmbedName] = &Tensor{Shape: bf.Tensors[EmbedName].Shape, Data: bad.Tensors[EmbedName].Data, BF16: bf.Tensors[EmbedName].BF16}
	if err := bad.Check("x"); !errors.Is(err, ErrWeights) {
		t.Errorf("a tensor with both Data and BF16: Check gave %v", err)
	}
	bad.Tensors[EmbedName] = &Tensor{Shape: bf.Tensors[EmbedName].Shape, BF16: bf.Tensors[EmbedName].BF16[1:]}
	if err := bad.Check("x"); !errors.Is(err, ErrWeights) {
		t.Errorf("a bfloat16 tensor one value short: Check gave %v", err)
	}
}
