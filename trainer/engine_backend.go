package trainer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// Training devices (Config.Device, the --device flag).
const (
	// DeviceCPU trains with package model's Gorgonia graph (CPUBackend).
	DeviceCPU = "cpu"
	// DeviceHost trains with package engine's step on its plain-Go Host
	// device (EngineBackend): the GPU code path, run on the CPU.
	DeviceHost = "host"
	// DeviceCUDA trains with package engine's step on GPU 0 (EngineBackend
	// over cudadev); only binaries built with -tags fedcuda have it.
	DeviceCUDA = "cuda"
)

// ErrNoCUDA is returned for DeviceCUDA by a binary built without the cuda
// build tag.
var ErrNoCUDA = errors.New("this binary was built without CUDA support; rebuild with -tags fedcuda")

// DeviceOpener opens a fresh engine.Device.
type DeviceOpener func() (engine.Device, error)

// engineDevices maps a device name to its opener; device_cuda.go adds
// DeviceCUDA in -tags fedcuda builds.
var engineDevices = map[string]DeviceOpener{
	DeviceHost: func() (engine.Device, error) { return engine.NewHost(), nil },
}

// Devices lists the device names this binary accepts, sorted.
func Devices() []string {
	names := []string{DeviceCPU}
	for n := range engineDevices {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ValidateDevice checks a device name ("" means DeviceCPU). DeviceCUDA in a
// binary without CUDA support is an error wrapping ErrNoCUDA.
func ValidateDevice(name string) error {
	if name == "" || name == DeviceCPU {
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

// NewBackend returns the Backend that trains on device name: CPUBackend for
// DeviceCPU (and ""), an EngineBackend for the engine devices, after
// opening the device once to check that it is there.
func NewBackend(name string) (Backend, error) {
	if err := ValidateDevice(name); err != nil {
		return nil, fmt.Errorf("%w: device: %w", ErrConfig, err)
	}
	if name == "" || name == DeviceCPU {
		return &CPUBackend{}, nil
	}
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
// the same update files as CPUBackend (WriteUpdate), from the same batches,
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
	m, windows, err := loadTask(t, d)
	if err != nil {
		return Update{}, err
	}
	tc := t.Train
	if b.Progress != nil {
		tc.Progress = func(step int, loss, _ float64) { b.Progress(step, loss) }
	}
	dev, err := b.Open()
	if err != nil {
		return Update{}, fmt.Errorf("trainer: device %s: %w", b.Device, err)
	}
	tr, err := engine.NewTrainer(dev, m, t.Adapter, tc)
	if err != nil {
		return Update{}, errors.Join(fmt.Errorf("%w: %w", ErrTask, err), dev.Close())
	}
	loss, err := tr.Run(ctx, datasets.NewBatcher(windows, tc.Batch, tc.Seed))
	var ts map[string]*model.Tensor
	name := UpdateFullFile
	if err == nil {
		// Adapter and Model return nil when the device fails to read the
		// weights back; Close then says why.
		if tc.LoRA != nil {
			if ad := tr.Adapter(); ad != nil {
				ts, name = ad.Tensors, UpdateLoRAFile
			}
		} else if mm := tr.Model(); mm != nil {
			ts = mm.Tensors
		}
	}
	steps, tokens := tr.StepCount(), tr.Tokens()
	cerr := errors.Join(tr.Close(), dev.Close())
	switch {
	case err != nil:
		return Update{}, err
	case cerr != nil:
		return Update{}, fmt.Errorf("trainer: device %s: %w", b.Device, cerr)
	case ts == nil:
		return Update{}, fmt.Errorf("trainer: device %s: reading the trained weights back failed", b.Device)
	}
	path := filepath.Join(t.OutDir, name)
	digest, err := writeTaskUpdate(t, path, ts)
	if err != nil {
		return Update{}, err
	}
	return Update{Path: path, Digest: digest, Loss: loss, Steps: steps, Tokens: tokens}, nil
}

// loadTask loads a task's model and cuts the local data into windows of
// seq_len+1 tokens, as CPUBackend does.
func loadTask(t Task, d Data) (*model.Model, [][]int, error) {
	m, err := model.Load(t.ModelDir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrTask, err)
	}
	tok, err := tokenizer.Load(t.ModelDir, m.Config.VocabSize)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrTask, err)
	}
	tokens := datasets.Tokenize(d.Dataset, tok)
	windows := datasets.Windows(tokens, t.Train.SeqLen)
	if len(windows) == 0 {
		return nil, nil, fmt.Errorf("%w: the local data has %d tokens, fewer than seq_len+1 = %d", ErrTask, len(tokens), t.Train.SeqLen+1)
	}
	return m, windows, nil
}
