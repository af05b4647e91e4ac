package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// int8RoundTolerance: an int8 round's global lies within this fraction of
// the round's update norm ‖global − base‖ of the uncompressed round's
// global. Measured on the tiny model (two trainers, 3 steps at lr 1e-3,
// block 64, FedAvg; go test -v -run Int8Round ./trainer):
//
//	full: update norm 0.573, int8 deltas 0.00165 away (0.0029 of it), int8 weights 0.0451 (0.079)
//	LoRA: update norm 0.0737, int8 deltas 0.000210 away (0.0028 of it), int8 weights 0.00670 (0.091)
const int8RoundTolerance = 0.01

// TestFullInt8RoundMatchesUncompressed runs one full fine-tuning round of
// two trainers three ways — uncompressed, int8 deltas (what Fit writes),
// and int8 of the weights themselves (what Fit wrote before) — aggregates
// each with FedAvg on the round's base and compares the globals.
func TestFullInt8RoundMatchesUncompressed(t *testing.T) {
	dir, _ := tinyModel(t)
	int8Round(t, &GorgoniaBackend{}, dir, filepath.Join(dir, model.WeightsFile), nil)
}

// TestEngineInt8RoundMatchesUncompressed is the same with the engine
// backend on the host device, which writes its update the same way.
func TestEngineInt8RoundMatchesUncompressed(t *testing.T) {
	dir, _ := tinyModel(t)
	b, err := NewBackend(DeviceHost)
	if err != nil {
		t.Fatal(err)
	}
	int8Round(t, b, dir, filepath.Join(dir, model.WeightsFile), nil)
}

// TestLoRAInt8RoundMatchesUncompressed is the same for a LoRA round, whose
// base is the global adapter (here one whose B matrices already moved).
func TestLoRAInt8RoundMatchesUncompressed(t *testing.T) {
	dir, cfg := tinyModel(t)
	lc := model.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}}
	ad, err := model.NewAdapter(cfg, lc, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ad.Tensors {
		for i := range x.Data {
			if x.Data[i] == 0 {
				x.Data[i] = 0.01 * float32(i%5-2)
			}
		}
	}
	global := filepath.Join(t.TempDir(), "global.safetensors")
	if _, err := WriteUpdate(global, ad.Tensors, "none", 0); err != nil {
		t.Fatal(err)
	}
	if ad, err = ReadAdapter(global, lc); err != nil {
		t.Fatal(err)
	}
	int8Round(t, &GorgoniaBackend{}, dir, global, ad)
}

// int8Round trains two trainers with be on dir (with adapter ad for LoRA) and
// compares the FedAvg globals over base of uncompressed, int8-delta and
// int8-weights updates.
func int8Round(t *testing.T, be Backend, dir, basePath string, ad *model.Adapter) {
	t.Helper()
	shards := []string{"../datasets/testdata/shards/trainer-1.jsonl", "../datasets/testdata/shards/trainer-2.jsonl"}
	fit := func(compression string, k int) Update {
		t.Helper()
		ds, err := datasets.Load(shards[k], datasets.Options{})
		if err != nil {
			t.Fatal(err)
		}
		task := Task{ModelDir: dir, Adapter: ad, OutDir: t.TempDir(), Compression: compression, Int8Block: 64,
			Train: model.TrainConfig{Steps: 3, Batch: 2, SeqLen: 16, LR: 1e-3, Schedule: model.ScheduleConstant, Seed: uint64(k + 1)}}
		if ad != nil {
			task.Train.LoRA = &ad.Config
		}
		u, err := be.Fit(context.Background(), task, Data{Dataset: ds})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	round := func(paths []string) map[string][]float32 {
		t.Helper()
		st, err := aggregator.New("fedavg", nil)
		if err != nil {
			t.Fatal(err)
		}
		req := aggregator.Request{Strategy: st, Base: basePath, Options: aggregator.Options{Strict: true, Threads: 1}}
		for k, p := range paths {
			req.Inputs = append(req.Inputs, aggregator.Input{Path: p, Weight: float64(k + 1), ContributorID: fmt.Sprint("trainer-", k)})
		}
		res, err := aggregator.Aggregate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]float32{}
		for _, ts := range res.Tensors {
			x := make([]float32, ts.Info().NumElements())
			if err := safetensors.DecodeFloat32(ts.DType, x, ts.Data); err != nil {
				t.Fatal(err)
			}
			out[ts.Name] = x
		}
		return out
	}

	var none, delta8, weights8 []string
	for k := range shards {
		un := fit("none", k)
		none = append(none, un.Path)
		u8 := fit("int8", k)
		delta8 = append(delta8, u8.Path)
		// The update file says it is a delta.
		up, err := aggregator.OpenUpdate(u8.Path)
		if err != nil {
			t.Fatal(err)
		}
		if up.Kind() != aggregator.KindDelta || up.Block() != 64 {
			t.Errorf("int8 update: kind %q block %d, want delta, 64", up.Kind(), up.Block())
		}
		up.Close()
		// Before: int8 of the trained weights themselves.
		full := readTensors(t, un.Path)
		p := filepath.Join(t.TempDir(), "weights-int8.safetensors")
		if _, err := WriteUpdate(p, full, "int8", 64); err != nil {
			t.Fatal(err)
		}
		weights8 = append(weights8, p)
	}
	base := readTensors(t, basePath)
	gNone, gDelta, gWeights := round(none), round(delta8), round(weights8)
	var upd, errDelta, errWeights float64
	for name, b := range base {
		for i := range b.Data {
			upd += sq(gNone[name][i] - b.Data[i])
			errDelta += sq(gDelta[name][i] - gNone[name][i])
			errWeights += sq(gWeights[name][i] - gNone[name][i])
		}
	}
	upd, errDelta, errWeights = math.Sqrt(upd), math.Sqrt(errDelta), math.Sqrt(errWeights)
	t.Logf("round update ‖g−base‖ = %.4g; int8 delta error ‖g8−g‖ = %.4g (%.2g of the update); int8 weights error = %.4g (%.2g)",
		upd, errDelta, errDelta/upd, errWeights, errWeights/upd)
	if !(upd > 0) {
		t.Fatal("the uncompressed round did not move the model")
	}
	if errDelta > int8RoundTolerance*upd {
		t.Errorf("int8 round is %.4g from the uncompressed round, over %.2g × the update norm %.4g", errDelta, int8RoundTolerance, upd)
	}
	if errDelta >= errWeights {
		t.Errorf("int8 deltas (error %.4g) are no better than int8 weights (%.4g)", errDelta, errWeights)
	}
}

func sq(x float32) float64 { return float64(x) * float64(x) }

// readTensors reads every tensor of a safetensors file as float32.
func readTensors(t *testing.T, path string) map[string]*model.Tensor {
	t.Helper()
	up, err := aggregator.OpenUpdate(path)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	dec := aggregator.NewDecoder(nil)
	out := map[string]*model.Tensor{}
	for _, ti := range up.Tensors() {
		x := make([]float32, ti.NumElements())
		if err := dec.Read(up, ti.Name, 0, x); err != nil {
			t.Fatal(err)
		}
		out[ti.Name] = &model.Tensor{Shape: ti.Shape, Data: x}
	}
	return out
}

// TestDeltaUpdateIsNotWeights: a delta update cannot be read as weights,
// and WriteDeltaUpdate refuses a base that does not match.
func TestDeltaUpdateIsNotWeights(t *testing.T) {
	dir, _ := tinyModel(t)
	base, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{"int8", "f16", "bf16", "none"} {
		out := filepath.Join(t.TempDir(), "m")
		if _, err := base.Save(out, safetensors.F32); err != nil {
			t.Fatal(err)
		}
		if _, err := WriteDeltaUpdate(filepath.Join(out, model.WeightsFile), base.Tensors, base.Tensors, comp, 64); err != nil {
			t.Fatal(err)
		}
		_, err := model.Load(out)
		if !errors.Is(err, model.ErrNotWeights) || !strings.Contains(err.Error(), `fedtune.kind is "delta"`) {
			t.Errorf("%s: model.Load of a delta update: %v", comp, err)
		}
		_, err = ReadAdapter(filepath.Join(out, model.WeightsFile), model.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj"}})
		if !errors.Is(err, model.ErrNotWeights) {
			t.Errorf("%s: ReadAdapter of a delta update: %v", comp, err)
		}
	}
	// Without the base, the aggregator refuses deltas.
	p := filepath.Join(t.TempDir(), "d.safetensors")
	if _, err := WriteDeltaUpdate(p, base.Tensors, base.Tensors, "int8", 64); err != nil {
		t.Fatal(err)
	}
	st, _ := aggregator.New("fedavg", nil)
	_, err = aggregator.Aggregate(context.Background(), aggregator.Request{Strategy: st, Inputs: []aggregator.Input{{Path: p, Weight: 1}}})
	if err == nil || !strings.Contains(err.Error(), "deltas need the base model") {
		t.Errorf("aggregating a delta without a base: %v", err)
	}
	// A base that lacks a tensor, or has another shape.
	other := map[string]*model.Tensor{"x": {Shape: []int{2}, Data: []float32{1, 2}}}
	if _, err := WriteDeltaUpdate(p, other, base.Tensors, "int8", 64); err == nil || !strings.Contains(err.Error(), `tensor "x" is not in the base`) {
		t.Errorf("tensor missing from the base: %v", err)
	}
	if _, err := WriteDeltaUpdate(p, other, map[string]*model.Tensor{"x": {Shape: []int{1, 2}, Data: []float32{1, 2}}}, "int8", 64); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("shape mismatch: %v", err)
	}
}
