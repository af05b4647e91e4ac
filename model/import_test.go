package model_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
)

func tinyModel(t *testing.T) *model.Model {
	t.Helper()
	c := modeltest.TinyConfig()
	c.RopeScaling = modeltest.TinyLlama3Scaling()
	m, err := model.New(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	modeltest.Randomise(m, 3)
	return m
}

// TestImportHFCheckpoint imports a checkpoint written as transformers
// writes it (metadata {"format":"pt"}, BF16, two shards and an index).
func TestImportHFCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    modeltest.HFCheckpoint
	}{
		{"bf16-2-shards", modeltest.HFCheckpoint{DType: safetensors.BF16, Shards: 2}},
		{"f16-single", modeltest.HFCheckpoint{DType: safetensors.F16, Shards: 1}},
		{"f32-3-shards", modeltest.HFCheckpoint{DType: safetensors.F32, Shards: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tinyModel(t)
			src := filepath.Join(t.TempDir(), "hf")
			files := modeltest.WriteHFCheckpoint(t, src, m, tc.o)
			dst := filepath.Join(t.TempDir(), "out", "imported")
			rec, err := model.Import(src, dst, model.ImportOptions{Name: "tiny", Licence: "Apache-2.0", Source: "test"})
			if err != nil {
				t.Fatal(err)
			}
			// The canonical digest is the file's SHA-256, and the weights
			// read back are the source's.
			sum, err := digest.File(filepath.Join(dst, model.WeightsFile))
			if err != nil {
				t.Fatal(err)
			}
			dg, err := model.DigestPath(filepath.Join(dst, model.WeightsFile))
			if err != nil {
				t.Fatal(err)
			}
			if rec.Digest != sum || dg != sum || rec.DType != tc.o.DType {
				t.Fatalf("record digest %s dtype %s, file sha256 %s, weight digest %s", rec.Digest, rec.DType, sum, dg)
			}
			f, err := safetensors.Open(filepath.Join(dst, model.WeightsFile))
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(f.Metadata(), map[string]string{"format": "pt"}) {
				t.Errorf("canonical metadata %v", f.Metadata())
			}
			f.Close()
			a, err := model.Load(src)
			if err != nil {
				t.Fatal(err)
			}
			b, err := model.Load(dst)
			if err != nil {
				t.Fatal(err)
			}
			for name, ta := range a.Tensors {
				if !slices.Equal(ta.Data, b.Tensors[name].Data) {
					t.Fatalf("tensor %s differs after import", name)
				}
			}
			if b.Config.RopeScaling.Kind() != "llama3" || b.Config.TorchDtype == "" {
				t.Errorf("imported config %+v", b.Config)
			}
			// Sources: every file read, with its size and SHA-256.
			var paths []string
			for _, s := range rec.Sources {
				paths = append(paths, s.Path)
				p := filepath.Join(src, s.Path)
				st, _ := os.Stat(p)
				want, _ := digest.File(p)
				if s.SHA256 != want || st == nil || s.Size != st.Size() {
					t.Errorf("source %+v, want sha256 %s", s, want)
				}
			}
			if !slices.Equal(paths, files) {
				t.Errorf("sources %v, want %v", paths, files)
			}
			// Copied files are byte for byte the source's; the record
			// reads back.
			for _, n := range []string{"generation_config.json", "tokenizer_config.json"} {
				x, _ := os.ReadFile(filepath.Join(src, n))
				y, _ := os.ReadFile(filepath.Join(dst, n))
				if !bytes.Equal(x, y) {
					t.Errorf("%s not copied", n)
				}
			}
			back, err := model.ReadImportRecord(dst)
			if err != nil {
				t.Fatal(err)
			}
			if back.Digest != rec.Digest || back.Name != "tiny" || back.Licence != "Apache-2.0" || len(back.Sources) != len(rec.Sources) {
				t.Errorf("record read back as %+v", back)
			}
			// The same weights imported from another layout: the same digest.
			if tc.o.Shards > 1 {
				src1 := filepath.Join(t.TempDir(), "hf1")
				modeltest.WriteHFCheckpoint(t, src1, m, modeltest.HFCheckpoint{DType: tc.o.DType, Shards: 1})
				rec1, err := model.Import(src1, filepath.Join(t.TempDir(), "one"), model.ImportOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if rec1.Digest != rec.Digest {
					t.Errorf("one file gives %s, shards %s", rec1.Digest, rec.Digest)
				}
			}
		})
	}
}

func editJSON(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, _ := json.Marshal(m)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImportRefusals: a malformed folder is refused with an error naming
// the fault, and nothing is written.
func TestImportRefusals(t *testing.T) {
	shard1, shard2 := "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	weightMap := func(f func(wm map[string]any)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, model.WeightsIndex), func(m map[string]any) { f(m["weight_map"].(map[string]any)) })
		}
	}
	rewriteShard := func(name string, f func([]safetensors.Tensor) []safetensors.Tensor) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, name)
			sf, err := safetensors.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			var ts []safetensors.Tensor
			for _, ti := range sf.Tensors() {
				raw, _ := sf.ReadRaw(ti.Name)
				ts = append(ts, safetensors.Tensor{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: raw})
			}
			sf.Close()
			if err := os.WriteFile(p, modeltest.HFSafetensors(f(ts)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	toF32 := func(ts []safetensors.Tensor) []safetensors.Tensor {
		for i, x := range ts {
			v := make([]float32, x.Info().NumElements())
			_ = safetensors.DecodeFloat32(x.DType, v, x.Data)
			ts[i], _ = safetensors.FromFloat32(x.Name, safetensors.F32, x.Shape, v)
		}
		return ts
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		want   []string
	}{
		{"shard missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, shard2)) },
			[]string{model.WeightsIndex, shard2, "is missing"}},
		{"index names a tensor no shard holds", weightMap(func(wm map[string]any) { wm["model.layers.0.self_attn.rotary.weight"] = shard1 }),
			[]string{model.WeightsIndex, `"model.layers.0.self_attn.rotary.weight"`, shard1, "does not hold it"}},
		{"index puts a tensor in the wrong shard", weightMap(func(wm map[string]any) { wm[model.EmbedName] = shard2 }),
			[]string{model.EmbedName}},
		{"tensor in two shards", nil, nil}, // set below: it reads shard 1 first
		{"mixed dtypes", rewriteShard(shard2, toF32), []string{shard2, "dtype F32", "other tensors are BF16"}},
		{"torch_dtype disagrees", func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, model.ConfigFile), func(m map[string]any) { m["torch_dtype"] = "float16" })
		}, []string{model.ConfigFile, `torch_dtype is "float16"`, "BF16"}},
		{"integer dtype", rewriteShard(shard1, func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts[0].DType = safetensors.I16
			return ts
		}), []string{shard1, "dtype I16"}},
		{"shape differs from config", func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, model.ConfigFile), func(m map[string]any) { m["intermediate_size"] = 20.0 })
		}, []string{"shape", "wants"}},
		{"path traversal", weightMap(func(wm map[string]any) { wm[model.EmbedName] = "../" + shard1 }),
			[]string{model.WeightsIndex, `"../` + shard1 + `"`, "plain .safetensors file name"}},
		{"absolute path", weightMap(func(wm map[string]any) { wm[model.EmbedName] = "/etc/passwd" }),
			[]string{"plain .safetensors file name"}},
		{"subfolder", weightMap(func(wm map[string]any) { wm[model.EmbedName] = "sub/" + shard1 }),
			[]string{"plain .safetensors file name"}},
		{"duplicate key in the index", func(t *testing.T, dir string) {
			p := filepath.Join(dir, model.WeightsIndex)
			data, _ := os.ReadFile(p)
			data = bytes.Replace(data, []byte(`"weight_map": {`), []byte(`"weight_map": {"`+model.EmbedName+`": "`+shard2+`",`), 1)
			os.WriteFile(p, data, 0o644)
		}, []string{model.WeightsIndex, "duplicate"}},
		{"config refused", func(t *testing.T, dir string) {
			editJSON(t, filepath.Join(dir, model.ConfigFile), func(m map[string]any) { m["attention_bias"] = true })
		}, []string{"attention_bias"}},
		{"runaway chat template", func(t *testing.T, dir string) {
			b, _ := json.Marshal(map[string]any{"chat_template": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"})
			if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"tokenizer_config.json", "chat template", "depth limit"}},
		{"no weights", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, model.WeightsIndex))
		}, []string{model.WeightsFile, model.WeightsIndex}},
	}
	// A tensor in both shards: shard 2 also holds shard 1's first tensor,
	// and the index lists it for shard 2 too (it cannot list it twice).
	cases[3] = struct {
		name   string
		mutate func(t *testing.T, dir string)
		want   []string
	}{"tensor in two shards", func(t *testing.T, dir string) {
		sf, err := safetensors.Open(filepath.Join(dir, shard1))
		if err != nil {
			t.Fatal(err)
		}
		first := sf.Tensors()[0]
		raw, _ := sf.ReadRaw(first.Name)
		sf.Close()
		rewriteShard(shard2, func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.Tensor{Name: first.Name, DType: first.DType, Shape: first.Shape, Data: raw})
		})(t, dir)
	}, []string{"a tensor in two shards"}}

	m := tinyModel(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "hf")
			modeltest.WriteHFCheckpoint(t, src, m, modeltest.HFCheckpoint{DType: safetensors.BF16, Shards: 2})
			tc.mutate(t, src)
			parent := t.TempDir()
			dst := filepath.Join(parent, "out")
			_, err := model.Import(src, dst, model.ImportOptions{})
			if err == nil {
				t.Fatal("imported")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("left %v behind", ents)
			}
		})
	}
	t.Run("destination not empty", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "hf")
		modeltest.WriteHFCheckpoint(t, src, m, modeltest.HFCheckpoint{Shards: 2})
		dst := t.TempDir()
		os.WriteFile(filepath.Join(dst, "keep"), []byte("x"), 0o644)
		if _, err := model.Import(src, dst, model.ImportOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("err %v", err)
		}
		if ents, _ := os.ReadDir(dst); len(ents) != 1 {
			t.Errorf("destination changed: %v", ents)
		}
	})
	if !errors.Is(func() error {
		_, err := model.Import(filepath.Join(t.TempDir(), "none"), filepath.Join(t.TempDir(), "o"), model.ImportOptions{})
		return err
	}(), os.ErrNotExist) {
		t.Error("a missing folder's error does not wrap os.ErrNotExist")
	}
}

// FuzzImportIndex imports a two-shard checkpoint under an arbitrary
// model.safetensors.index.json: it is imported whole (the weights read
// back equal the source's) or refused leaving nothing behind, never in
// part, and never reads a file outside the folder.
func FuzzImportIndex(f *testing.F) {
	m := func() *model.Model {
		c := modeltest.TinyConfig()
		c.NumHiddenLayers = 1
		mm, _ := model.New(c, 5)
		return mm
	}()
	tmpl := f.TempDir()
	modeltest.WriteHFCheckpoint(f, tmpl, m, modeltest.HFCheckpoint{Shards: 2})
	good, err := os.ReadFile(filepath.Join(tmpl, model.WeightsIndex))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(bytes.Replace(good, []byte(`"model-00002`), []byte(`"../model-00002`), 1))
	f.Add(bytes.Replace(good, []byte(`"model-00002`), []byte(`"model-00001`), 1))
	f.Add([]byte(`{"weight_map":{}}`))
	f.Add([]byte(`{"metadata":{"total_size":1},"weight_map":{"model.norm.weight":"model-00001-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{"a":"."}}`))
	want, err := model.Load(tmpl)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, index []byte) {
		root := t.TempDir()
		src := filepath.Join(root, "hf")
		if err := os.CopyFS(src, os.DirFS(tmpl)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, model.WeightsIndex), index, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(root, "out")
		rec, err := model.Import(src, out, model.ImportOptions{})
		if err != nil {
			if ents, _ := os.ReadDir(root); len(ents) != 1 {
				t.Fatalf("refused (%v) but left %v", err, ents)
			}
			return
		}
		got, err := model.Load(out)
		if err != nil {
			t.Fatalf("imported, but the output does not load: %v", err)
		}
		for name, w := range want.Tensors {
			if !slices.Equal(w.Data, got.Tensors[name].Data) {
				t.Fatalf("tensor %s differs", name)
			}
		}
		if d, _ := digest.File(filepath.Join(out, model.WeightsFile)); d != rec.Digest {
			t.Fatalf("record digest %s, file %s", rec.Digest, d)
		}
	})
}
