package trainer

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestPretrainTaskWritesDeltaFromBase: a pre-training task (Task.Base set)
// sends the delta from the global weights, marked with their digest, and
// base + delta is what full training of the same task gives; a task whose
// Base is not the weights in ModelDir fails without writing an update.
func TestPretrainTaskWritesDeltaFromBase(t *testing.T) {
	dir, _ := tinyModel(t)
	base, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := base.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := datasets.Load("../datasets/testdata/english/train.txt", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	be, err := NewBackend(DeviceCPU)
	if err != nil {
		t.Fatal(err)
	}
	task := func(b string) Task {
		return Task{ModelDir: dir, OutDir: t.TempDir(), Compression: "none", Base: b,
			Train: model.TrainConfig{Steps: 3, Batch: 2, SeqLen: 16, LR: 3e-3, Schedule: model.ScheduleConstant, Seed: 5}}
	}
	pre, err := be.Fit(context.Background(), task(digest), Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	full, err := be.Fit(context.Background(), task(""), Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	up, err := aggregator.OpenUpdate(pre.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	if up.Kind() != aggregator.KindDelta || up.Base() != digest {
		t.Fatalf("pretrain update: kind %q base %q, want delta from %s", up.Kind(), up.Base(), digest)
	}
	fu, err := aggregator.OpenUpdate(full.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fu.Close()
	if fu.Kind() != aggregator.KindFull || fu.Base() != "" {
		t.Fatalf("full update: kind %q base %q", fu.Kind(), fu.Base())
	}
	pf, err := safetensors.Open(pre.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	ff, err := safetensors.Open(full.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	moved := false
	for name, b := range base.Tensors {
		d, err := pf.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		w, err := ff.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		for i := range d {
			if d[i] != 0 {
				moved = true
			}
			// The delta is trained − base in float32: adding it back
			// gives the trained weight to within one rounding.
			if got, want := b.Data[i]+d[i], w[i]; got != want && abs32(got-want) > 1e-6*max(1, abs32(want)) {
				t.Fatalf("%s[%d]: base + delta = %v, full training gives %v", name, i, got, want)
			}
		}
	}
	if !moved {
		t.Fatal("the delta is all zeros: nothing trained")
	}
	_, err = be.Fit(context.Background(), task(strings.Repeat("0", 64)), Data{Dataset: ds})
	if !errors.Is(err, ErrTask) || !strings.Contains(err.Error(), "the task says "+strings.Repeat("0", 64)) {
		t.Fatalf("task naming another base: %v", err)
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}
