package trainer

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
)

func TestValidateDevice(t *testing.T) {
	_, hasCUDA := engineDevices[DeviceCUDA]
	for _, tc := range []struct {
		name, wantErr string
	}{
		{"", ""}, {"cpu", ""}, {"host", ""}, {"gorgonia", ""},
		{"gpu", `unknown device "gpu"`},
		{"CUDA", `unknown device "CUDA"`},
		{"cuda", map[bool]string{false: "rebuild with -tags fedcuda", true: ""}[hasCUDA]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateDevice(tc.name)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if tc.name == DeviceCUDA && !errors.Is(err, ErrNoCUDA) {
				t.Errorf("error %v does not wrap ErrNoCUDA", err)
			}
		})
	}
}

func TestConfigDevice(t *testing.T) {
	_, hasCUDA := engineDevices[DeviceCUDA]
	for _, tc := range []struct {
		dev     string
		wantErr string
	}{
		{"cpu", ""}, {"host", ""}, {"gorgonia", ""},
		{"tpu", `device: unknown device "tpu" (want one of cpu, `},
		{"cuda", map[bool]string{false: "device: \"cuda\": this binary was built without CUDA support; rebuild with -tags fedcuda", true: ""}[hasCUDA]},
	} {
		t.Run(tc.dev, func(t *testing.T) {
			c, err := ParseConfig("trainer.yaml", []byte(goodConfig+"device: "+tc.dev+"\n"))
			if tc.wantErr == "" {
				if err != nil || c.Device != tc.dev {
					t.Fatalf("device %q, error %v", c.Device, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v, want one wrapping ErrConfig containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewBackend(t *testing.T) {
	// The default ("", cpu) is the engine on its Host device.
	for name, want := range map[string]string{"": DeviceCPU, DeviceCPU: DeviceCPU, DeviceHost: DeviceHost} {
		b, err := NewBackend(name)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		eb, ok := b.(*EngineBackend)
		if !ok || eb.Device != want || eb.Open == nil {
			t.Fatalf("%q: backend %#v", name, b)
		}
		dev, err := eb.Open()
		if err != nil {
			t.Fatal(err)
		}
		if dev.Name() != "host" {
			t.Errorf("%q: device %s, want the engine's host", name, dev.Name())
		}
		dev.Close()
	}
	if b, err := NewBackend(DeviceGorgonia); err != nil {
		t.Error(err)
	} else if _, ok := b.(*GorgoniaBackend); !ok {
		t.Errorf("gorgonia: backend %T, want *GorgoniaBackend", b)
	}
	if _, err := NewBackend("tpu"); err == nil || !errors.Is(err, ErrConfig) {
		t.Errorf("tpu: error %v, want one wrapping ErrConfig", err)
	}
	if _, err := (&EngineBackend{Device: "none"}).Fit(context.Background(), Task{}, Data{}); !errors.Is(err, ErrTask) {
		t.Errorf("a backend without an opener: error %v, want ErrTask", err)
	}
}

// TestEngineBackendHostLoRA trains a LoRA round on the Host device and
// checks that the update is a valid adapter file, repeatable bit for bit,
// and close to what GorgoniaBackend (Gorgonia) trains from the same task.
func TestEngineBackendHostLoRA(t *testing.T) {
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
	train := model.TrainConfig{LoRA: &lc, Steps: 3, Batch: 2, SeqLen: 16, LR: 1e-2, ClipNorm: 1, Schedule: model.ScheduleConstant, Seed: 3}
	task := func() Task {
		return Task{ModelDir: dir, Adapter: ad, OutDir: t.TempDir(), Compression: "none", Train: train}
	}
	b, err := NewBackend(DeviceHost)
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	b.(*EngineBackend).Progress = func(step int, loss float64) { losses = append(losses, loss) }
	u, err := b.Fit(context.Background(), task(), Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	if len(losses) != 3 || u.Steps != 3 || u.Tokens != 3*2*16 || !(u.Loss > 0) || u.Loss != losses[2] {
		t.Fatalf("progress %v, update %+v", losses, u)
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
			moved = moved || v != ad.Tensors[name].Data[i]
		}
	}
	if !moved {
		t.Error("training left the adapter unchanged")
	}
	// Repeatable: the same task gives the same bits.
	u2, err := (&EngineBackend{Device: DeviceHost, Open: engineDevices[DeviceHost]}).Fit(context.Background(), task(), Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	if u2.Digest != u.Digest {
		t.Errorf("same task, different updates: %s vs %s", u.Digest, u2.Digest)
	}
	// The Gorgonia backend trains the same round to nearly the same adapter.
	uc, err := (&GorgoniaBackend{}).Fit(context.Background(), task(), Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(uc.Loss-u.Loss) > 1e-3*math.Abs(uc.Loss) {
		t.Errorf("last loss %v on the host engine, %v on Gorgonia", u.Loss, uc.Loss)
	}
	want, err := ReadAdapter(uc.Path, lc)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want.Tensors {
		g := got.Tensors[name]
		for i := range w.Data {
			// Three AdamW steps move a weight by at most about 3·lr; the
			// two step implementations agree far more closely than that.
			if d := math.Abs(float64(g.Data[i] - w.Data[i])); d > 1e-3*math.Abs(float64(w.Data[i]))+1e-4 {
				t.Fatalf("%s[%d] = %g on the host engine, %g on Gorgonia", name, i, g.Data[i], w.Data[i])
			}
		}
	}
}

// TestEngineBackendHostFull trains a full fine-tuning round on the Host
// device: the update holds every model weight, in the model's file name.
func TestEngineBackendHostFull(t *testing.T) {
	dir, cfg := tinyModel(t)
	ds, err := datasets.Load("../datasets/testdata/shards/trainer-1.jsonl", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewBackend(DeviceHost)
	// Uncompressed, so that a weight that differs from the base was moved
	// by training, not by rounding.
	task := Task{ModelDir: dir, OutDir: t.TempDir(), Compression: "none",
		Train: model.TrainConfig{Steps: 2, Batch: 2, SeqLen: 16, LR: 1e-3, Schedule: model.ScheduleConstant, Seed: 1}}
	u, err := b.Fit(context.Background(), task, Data{Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(u.Path, UpdateFullFile) || u.Steps != 2 {
		t.Fatalf("update %+v", u)
	}
	up, err := aggregator.OpenUpdate(u.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	base, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	dec := aggregator.NewDecoder(nil)
	changed := 0
	for _, name := range base.Names() {
		want := base.Tensors[name].Data
		got := make([]float32, len(want))
		if err := dec.Read(up, name, 0, got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i := range got {
			if math.Abs(float64(got[i]-want[i])) > 0.02*math.Abs(float64(want[i]))+0.01 {
				t.Fatalf("%s[%d] = %g, base %g: two steps at lr 1e-3 moved it too far", name, i, got[i], want[i])
			}
			if got[i] != want[i] {
				changed++
			}
		}
	}
	if total := base.NumParams(); changed < total/2 {
		t.Errorf("full fine-tuning changed %d of %d weights, want most", changed, total)
	}
	// A task the device cannot train fails cleanly.
	bad := task
	bad.Train.SeqLen = 1 << 20
	if _, err := b.Fit(context.Background(), bad, Data{Dataset: ds}); err == nil {
		t.Error("seq_len beyond the data was accepted")
	}
}

// TestEngineBackendDeviceError: a device that fails to open fails the task
// with its error.
func TestEngineBackendDeviceError(t *testing.T) {
	dir, _ := tinyModel(t)
	ds, err := datasets.Load("../datasets/testdata/shards/trainer-1.jsonl", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("no such accelerator")
	b := &EngineBackend{Device: "broken", Open: func() (engine.Device, error) { return nil, boom }}
	_, err = b.Fit(context.Background(), Task{ModelDir: dir, OutDir: t.TempDir(),
		Train: model.TrainConfig{Steps: 1, Batch: 1, SeqLen: 8, LR: 1e-3}}, Data{Dataset: ds})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "broken") {
		t.Errorf("error %v, want one wrapping the opener's naming the device", err)
	}
}
