package trainer

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

func tinyModel(t *testing.T) (string, model.Config) {
	t.Helper()
	cfg, err := model.LoadConfigYAML("../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "base")
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

func TestWriteUpdateCompressions(t *testing.T) {
	ts := map[string]*model.Tensor{
		"b": {Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, 0, 1e-3, -7}},
		"a": {Shape: []int{4}, Data: []float32{0.25, 0.5, -0.75, 100}},
	}
	for _, tc := range []struct {
		kind string
		tol  float64
	}{{"none", 0}, {"f16", 0.05}, {"bf16", 0.5}, {"int8", 1}} {
		t.Run(tc.kind, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "u.safetensors")
			d, err := WriteUpdate(p, ts, tc.kind, 64)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := digest.File(p); err != nil || got != d {
				t.Fatalf("digest %s, file hashes to %s (%v)", d, got, err)
			}
			u, err := aggregator.OpenUpdate(p)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			dec := aggregator.NewDecoder(nil)
			for name, want := range ts {
				got := make([]float32, len(want.Data))
				if err := dec.Read(u, name, 0, got); err != nil {
					t.Fatal(err)
				}
				for i := range got {
					if math.Abs(float64(got[i]-want.Data[i])) > tc.tol {
						t.Errorf("%s[%d] = %g, want %g ± %g", name, i, got[i], want.Data[i], tc.tol)
					}
				}
			}
		})
	}
	if _, err := WriteUpdate(filepath.Join(t.TempDir(), "x"), ts, "zip", 0); err == nil {
		t.Error("unknown compression accepted")
	}
}

func TestGorgoniaBackendFitLoRA(t *testing.T) {
	dir, cfg := tinyModel(t)
	ds, err := datasets.Load("../datasets/testdata/shards/trainer-1.jsonl", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lc := model.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}}
	ad, err := model.NewAdapter(cfg, lc, 7)
	if err != nil {
		t.Fatal(err)
	}
	task := Task{ModelDir: dir, Adapter: ad, OutDir: t.TempDir(), Compression: "none",
		Train: model.TrainConfig{LoRA: &lc, Steps: 3, Batch: 2, SeqLen: 16, LR: 1e-2, Schedule: model.ScheduleConstant, Seed: 3}}
	var steps int
	u, err := (&GorgoniaBackend{Progress: func(int, float64) { steps++ }}).Fit(context.Background(), task, Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	if steps != 3 || u.Steps != 3 || !(u.Loss > 0) {
		t.Errorf("steps %d/%d loss %v", steps, u.Steps, u.Loss)
	}
	got, err := ReadAdapter(u.Path, lc)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Tensors) != len(ad.Tensors) {
		t.Fatalf("update has %d tensors, adapter %d", len(got.Tensors), len(ad.Tensors))
	}
	moved := false
	for name, x := range got.Tensors {
		for i, v := range x.Data {
			if v != ad.Tensors[name].Data[i] {
				moved = true
			}
		}
	}
	if !moved {
		t.Error("training left the adapter unchanged")
	}
	// The same task trains to the same bits.
	u2, err := (&GorgoniaBackend{}).Fit(context.Background(), Task{ModelDir: dir, Adapter: ad, OutDir: t.TempDir(), Train: task.Train}, Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	if u2.Digest != u.Digest {
		t.Errorf("same task, different updates: %s vs %s", u.Digest, u2.Digest)
	}
	if _, err := (&GorgoniaBackend{}).Fit(context.Background(), Task{ModelDir: t.TempDir(), Train: task.Train}, Data{Dataset: ds}); err == nil {
		t.Error("a missing model was accepted")
	}
}
