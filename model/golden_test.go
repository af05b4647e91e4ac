package model

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGoldenFiles pins the bytes of config.json (from configs/models/tiny.yaml)
// and adapter_config.json, and the digest of tiny.yaml's seed-1 weights, so
// that a change to an encoding (or to the seeded initialisation, which
// ledger entries depend on) is deliberate. Refresh with go test -update.
func TestGoldenFiles(t *testing.T) {
	c, err := LoadConfigYAML("../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	digest, err := m.Save(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	ad, err := NewAdapter(c, LoRAConfig{Rank: 8, Alpha: 16, Targets: DefaultTargets}, 1)
	if err != nil {
		t.Fatal(err)
	}
	ad.BaseModel = "fedtune/tiny"
	adDir := t.TempDir()
	adDigest, err := ad.Save(adDir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"tiny_config.golden.json": nil, "adapter_config.golden.json": nil,
		"tiny_seed1_digests.golden.txt": []byte("model " + digest + "\nadapter " + adDigest + "\n")}
	files["tiny_config.golden.json"], _ = os.ReadFile(filepath.Join(dir, ConfigFile))
	files["adapter_config.golden.json"], _ = os.ReadFile(filepath.Join(adDir, AdapterConfigFile))
	for name, got := range files {
		p := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(p, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v (run go test -update to create it)", err)
		}
		if string(got) != string(want) {
			t.Errorf("%s changed:\n got: %s\nwant: %s", p, got, want)
		}
	}
}
