package trainer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// Update file names inside Task.OutDir.
const (
	// LoRA updates are the adapter weights in PEFT's file name.
	UpdateLoRAFile = model.AdapterWeightsFile
	// Full fine-tuning updates are the model weights.
	UpdateFullFile = model.WeightsFile
)

// ErrTask is wrapped by errors about a task that cannot be trained.
var ErrTask = errors.New("trainer: bad task")

// Task is one round's local training, with the global weights already
// on local disk.
type Task struct {
	JobID string
	Round uint64
	// ModelDir is a model folder (config.json, model.safetensors and the
	// tokenizer when the model has one): the frozen base for LoRA, the
	// global weights to fine-tune for full.
	ModelDir string
	// Adapter is the global LoRA adapter to continue (LoRA only).
	Adapter *model.Adapter
	// Train is the local optimisation; Train.LoRA is set for LoRA.
	Train model.TrainConfig
	// Compression is the update encoding: none, f16, bf16 or int8.
	Compression string
	Int8Block   int
	// OutDir receives the update file (UpdateLoRAFile or UpdateFullFile).
	OutDir string
}

// Data is the trainer's local dataset.
type Data struct {
	Dataset *datasets.Dataset
}

// Update is a trained update on local disk.
type Update struct {
	// Path is the update file; Digest its SHA-256 (the artifact digest).
	Path   string
	Digest string
	// Loss is the mean training loss of the last step.
	Loss   float64
	Steps  int
	Tokens int
}

// Backend trains one task on local data. Implementations must be
// deterministic for a given task (its seed included).
type Backend interface {
	Fit(ctx context.Context, t Task, d Data) (Update, error)
}

// CPUBackend trains with package model (Gorgonia) on the CPU.
type CPUBackend struct {
	// Progress, if set, is called after every step.
	Progress func(step int, loss float64)
}

var _ Backend = (*CPUBackend)(nil)

// Fit implements Backend.
func (b *CPUBackend) Fit(ctx context.Context, t Task, d Data) (Update, error) {
	m, windows, err := loadTask(t, d)
	if err != nil {
		return Update{}, err
	}
	tc := t.Train
	if b.Progress != nil {
		tc.Progress = func(step int, loss, _ float64) { b.Progress(step, loss) }
	}
	tr, err := model.NewTrainerWithAdapter(m, t.Adapter, tc)
	if err != nil {
		return Update{}, fmt.Errorf("%w: %w", ErrTask, err)
	}
	defer tr.Close()
	loss, err := tr.Run(ctx, datasets.NewBatcher(windows, tc.Batch, tc.Seed))
	if err != nil {
		return Update{}, err
	}
	var ts map[string]*model.Tensor
	name := UpdateFullFile
	if tc.LoRA != nil {
		ts, name = tr.Adapter().Tensors, UpdateLoRAFile
	} else {
		ts = tr.Model().Tensors
	}
	path := filepath.Join(t.OutDir, name)
	digest, err := WriteUpdate(path, ts, t.Compression, t.Int8Block)
	if err != nil {
		return Update{}, err
	}
	return Update{Path: path, Digest: digest, Loss: loss, Steps: tr.StepCount(), Tokens: tr.Tokens()}, nil
}

// WriteUpdate writes tensors as a canonical safetensors file in the given
// compression (none: F32, f16, bf16, or int8 with per-block scales) and
// returns the file's SHA-256.
func WriteUpdate(path string, ts map[string]*model.Tensor, compression string, block int) (string, error) {
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	slices.Sort(names)
	dt := safetensors.F32
	switch compression {
	case "", "none":
	case "f16":
		dt = safetensors.F16
	case "bf16":
		dt = safetensors.BF16
	case "int8":
	default:
		return "", fmt.Errorf("%w: unknown compression %q", ErrTask, compression)
	}
	enc := dt
	if compression == "int8" {
		enc = safetensors.F32 // quantized below
	}
	var out []safetensors.Tensor
	for _, n := range names {
		t := ts[n]
		data, err := safetensors.EncodeFloat32(enc, nil, t.Data)
		if err != nil {
			return "", fmt.Errorf("encode %s: %w", n, err)
		}
		out = append(out, safetensors.Tensor{Name: n, DType: enc, Shape: slices.Clone(t.Shape), Data: data})
	}
	var meta map[string]string
	if compression == "int8" {
		var err error
		if out, meta, err = aggregator.QuantizeTensors(nil, out, block, nil); err != nil {
			return "", fmt.Errorf("quantize update: %w", err)
		}
	}
	return safetensors.WriteFile(path, out, meta)
}
