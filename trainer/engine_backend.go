package trainer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// Training devices (Config.Device, the --device flag).
const (
	// DeviceCPU, the default ("" too), trains with package engine's step
	// on its Host device (EngineBackend): plain Go with SIMD kernels on the
	// CPU.
	DeviceCPU = "cpu"
	// DeviceHost names the same device as DeviceCPU (the engine's Host).
	DeviceHost = "host"
	// DeviceGorgonia trains with model/gorgoniaref's Gorgonia graph
	// (GorgoniaBackend), the independent autodiff reference the engine is
	// tested against: several times slower, same updates to float32
	// rounding.
	DeviceGorgonia = "gorgonia"
	// DeviceCUDA trains with package engine's step on GPU 0 (EngineBackend
	// over cudadev); only binaries built with -tags fedcuda have it.
	DeviceCUDA = "cuda"
)

// ErrNoCUDA is returned for DeviceCUDA by a binary built without the cuda
// build tag.
var ErrNoCUDA = errors.New("this binary was built without CUDA support; rebuild with -tags fedcuda")

// DeviceOpener opens a fresh engine.Device.
type DeviceOpener func() (engine.Device, error)

// openHost opens the engine's Host device.
func openHost() (engine.Device, error) { return engine.NewHost(), nil }

// engineDevices maps a device name to its opener; device_cuda.go adds
// DeviceCUDA in -tags fedcuda builds.
var engineDevices = map[string]DeviceOpener{
	DeviceCPU:  openHost,
	DeviceHost: openHost,
}

// Devices lists the device names this binary accepts, sorted.
func Devices() []string {
	names := []string{DeviceGorgonia}
	for n := range engineDevices {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ValidateDevice checks a device name ("" means DeviceCPU). DeviceCUDA in a
// binary without CUDA support is an error wrapping ErrNoCUDA.
func ValidateDevice(name string) error {
	if name == "" || name == DeviceGorgonia {
		return nil
	}
	if _, ok := engineDevices[name]; ok {
		return nil
	}
	if name == DeviceCUDA {
		return fmt.Errorf("%q: %w", name, ErrNoCUDA)
	}
	return fmt.Errorf("unknown device %q (want one of %s)", name, strings.Join(Devices(), ", "))
}

// NewBackend returns the Backend that trains on device name: an
// EngineBackend for the engine devices (DeviceCPU, also for "", DeviceHost,
// DeviceCUDA), after opening the device once to check that it is there;
// GorgoniaBackend for DeviceGorgonia.
func NewBackend(name string) (Backend, error) {
	if err := ValidateDevice(name); err != nil {
		return nil, fmt.Errorf("%w: device: %w", ErrConfig, err)
	}
	if name == DeviceGorgonia {
		return &GorgoniaBackend{}, nil
	}
	name = cmp.Or(name, DeviceCPU)
	// Open the device once now, so that a trainer told to train on a GPU
	// it does not have says so when it starts, not at its first task.
	open := engineDevices[name]
	dev, err := open()
	if err != nil {
		return nil, fmt.Errorf("%w: device %s: %w", ErrConfig, name, err)
	}
	if err := dev.Close(); err != nil {
		return nil, fmt.Errorf("%w: device %s: %w", ErrConfig, name, err)
	}
	return &EngineBackend{Device: name, Open: open}, nil
}

// EngineBackend trains with package engine's training step on an
// engine.Device (the Host device, or a GPU through cudadev). It produces
// the same update files as GorgoniaBackend (WriteUpdate), from the same batches,
// schedule and optimiser. A device is opened for each Fit and closed after
// it, so nothing stays allocated between rounds.
type EngineBackend struct {
	// Device names the device, for errors and logs.
	Device string
	// Open opens the device (required).
	Open DeviceOpener
	// Progress, if set, is called after every step.
	Progress func(step int, loss float64)
}

var _ Backend = (*EngineBackend)(nil)

// Fit implements Backend.
func (b *EngineBackend) Fit(ctx context.Context, t Task, d Data) (Update, error) {
	if b.Open == nil {
		return Update{}, fmt.Errorf("%w: engine backend %q has no device opener", ErrTask, b.Device)
	}
	return fit(ctx, b.Device, startEngine(b.Open), b.Progress, t, d)
}

// loadTask loads a task's model and cuts the local data into windows of
// seq_len+1 tokens, for every backend: a plain token stream, or
// instruction records rendered with the model's chat template and packed.
func loadTask(t Task, d Data) (*model.Model, feed, error) {
	// With LoRA the base is frozen: its BF16 matrices stay bfloat16
	// (model.LoadBF16; the engine reads them so, with the same results).
	load := model.Load
	if t.Train.LoRA != nil {
		load = model.LoadBF16
	}
	m, err := load(t.ModelDir)
	if err != nil {
		return nil, feed{}, fmt.Errorf("%w: %w", ErrTask, err)
	}
	tok, err := tokenizer.Load(t.ModelDir, m.Config.VocabSize)
	if err != nil {
		return nil, feed{}, fmt.Errorf("%w: %w", ErrTask, err)
	}
	if d.Instruct {
		ws, _, err := InstructWindows(d.Dataset, t.ModelDir, tok, t.Train.SeqLen)
		if err != nil {
			return nil, feed{}, fmt.Errorf("%w: instruction data: %w", ErrTask, err)
		}
		if len(ws) == 0 {
			return nil, feed{}, fmt.Errorf("%w: the local instruction data packs into no window", ErrTask)
		}
		return m, feed{packed: ws}, nil
	}
	tokens := datasets.Tokenize(d.Dataset, tok)
	windows := datasets.Windows(tokens, t.Train.SeqLen)
	if len(windows) == 0 {
		return nil, feed{}, fmt.Errorf("%w: the local data has %d tokens, fewer than seq_len+1 = %d", ErrTask, len(tokens), t.Train.SeqLen+1)
	}
	return m, feed{windows: windows}, nil
}
