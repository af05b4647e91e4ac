//go:build fedcuda || fedcudaemu

package trainer

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine/cudadev"
)

// TestEngineBackendCUDA trains a LoRA round on GPU 0 through the backend a
// "device: cuda" config selects, and checks the update against the same
// round on the Host device.
func TestEngineBackendCUDA(t *testing.T) {
	if dev, err := cudadev.Open(0); err != nil {
		if errors.Is(err, cudadev.ErrNoDevice) {
			t.Skipf("no usable GPU: %v", err)
		}
		t.Fatal(err)
	} else if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
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
	task := func() Task {
		return Task{ModelDir: dir, Adapter: ad, OutDir: t.TempDir(), Compression: "none",
			Train: model.TrainConfig{LoRA: &lc, Steps: 3, Batch: 2, SeqLen: 16, LR: 1e-2, ClipNorm: 1, Schedule: model.ScheduleConstant, Seed: 3}}
	}
	fit := func(device string) (Update, *model.Adapter) {
		b, err := NewBackend(device)
		if err != nil {
			t.Fatal(err)
		}
		u, err := b.Fit(context.Background(), task(), Data{Dataset: ds})
		if err != nil {
			t.Fatalf("%s: %v", device, err)
		}
		a, err := ReadAdapter(u.Path, lc)
		if err != nil {
			t.Fatal(err)
		}
		return u, a
	}
	ug, ag := fit(DeviceCUDA)
	uh, ah := fit(DeviceHost)
	if ug.Steps != 3 || math.Abs(ug.Loss-uh.Loss) > 1e-3*uh.Loss {
		t.Errorf("GPU update %+v, Host update %+v", ug, uh)
	}
	for name, w := range ah.Tensors {
		g := ag.Tensors[name]
		for i := range w.Data {
			if d := math.Abs(float64(g.Data[i] - w.Data[i])); d > 1e-3*math.Abs(float64(w.Data[i]))+1e-4 {
				t.Fatalf("%s[%d] = %g on the GPU, %g on the Host device", name, i, g.Data[i], w.Data[i])
			}
		}
	}
}

// TestEngineBackendCUDAInstruct trains a LoRA round on instruction data
// (masked loss, packed documents, positions restarting per document) on
// GPU 0 and checks it against the same round on the Host device.
func TestEngineBackendCUDAInstruct(t *testing.T) {
	if dev, err := cudadev.Open(0); err != nil {
		if errors.Is(err, cudadev.ErrNoDevice) {
			t.Skipf("no usable GPU: %v", err)
		}
		t.Fatal(err)
	} else if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	dir, cfg := tinyModel(t)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(llama2Config), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, ok := ReadInstruct(instructTrain)
	if !ok {
		t.Fatal("the instruction set is not instruction data")
	}
	lc := model.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}}
	ad, err := model.NewAdapter(cfg, lc, 7)
	if err != nil {
		t.Fatal(err)
	}
	fit := func(device string) Update {
		b, err := NewBackend(device)
		if err != nil {
			t.Fatal(err)
		}
		u, err := b.Fit(context.Background(), Task{ModelDir: dir, Adapter: ad, OutDir: t.TempDir(), Compression: "none",
			Train: model.TrainConfig{LoRA: &lc, Steps: 2, Batch: 2, SeqLen: 128, LR: 1e-2, ClipNorm: 1, Schedule: model.ScheduleConstant, Seed: 3}},
			Data{Dataset: ds, Instruct: true})
		if err != nil {
			t.Fatalf("%s: %v", device, err)
		}
		return u
	}
	ug, uh := fit(DeviceCUDA), fit(DeviceHost)
	if ug.Steps != 2 || math.Abs(ug.Loss-uh.Loss) > 1e-3*uh.Loss {
		t.Errorf("GPU update %+v, Host update %+v", ug, uh)
	}
}
