package model

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestReadAdapterFile(t *testing.T) {
	c := tinyConfig()
	lc := LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj"}}
	ad, err := NewAdapter(c, lc, 3)
	if err != nil {
		t.Fatal(err)
	}
	for name, tn := range ad.Tensors { // B is zero at init: give it values
		for i := range tn.Data {
			tn.Data[i] = float32(len(name)+i) / 100
		}
	}
	dir := t.TempDir()
	want, err := ad.Save(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, AdapterWeightsFile)
	got, err := ReadAdapterFile(path, lc)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := got.Digest(); err != nil || d != want {
		t.Fatalf("digest of the read adapter = %s, %v; want %s", d, err, want)
	}
	if len(got.Tensors) != len(ad.Tensors) {
		t.Fatalf("read %d tensors, want %d", len(got.Tensors), len(ad.Tensors))
	}
	for name, tn := range ad.Tensors {
		g := got.Tensors[name]
		if g == nil || !slices.Equal(g.Shape, tn.Shape) || !slices.Equal(g.Data, tn.Data) {
			t.Fatalf("tensor %s differs", name)
		}
	}
	base, err := New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	m1, err := base.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := base.Merge(got)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := m1.Digest()
	d2, _ := m2.Digest()
	if d1 != d2 {
		t.Fatalf("merging the read adapter gives %s, the original %s", d2, d1)
	}

	garbage := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(garbage, []byte("not safetensors"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		lc   LoRAConfig
	}{
		{"missing file", filepath.Join(dir, "nope.safetensors"), lc},
		{"not safetensors", garbage, lc},
		{"bad config", path, LoRAConfig{Rank: 0, Alpha: 1, Targets: []string{"q_proj"}}},
	} {
		if _, err := ReadAdapterFile(tc.path, tc.lc); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
