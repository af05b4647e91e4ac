package trainer

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/engine"
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
	// Base, in pre-training (model.ModePretrain), is the weight digest of
	// the global model in ModelDir: the update is then always the delta
	// from it (DiLoCo's outer gradient, negated), marked __metadata__
	// fedtune.base with it so that an aggregation of another round's base
	// refuses it.
	Base string
	// OptState, in pre-training, is the file (OptStatePath) that keeps
	// the trainer's inner AdamW state for the job between rounds, as
	// DiLoCo does: a round starts from the moments it holds (fresh ones
	// when there is none, or it cannot be used: Update.OptNote says why)
	// and leaves the moments it ends with there. "" trains every round
	// from fresh moments. Only the engine devices keep it; the Gorgonia
	// reference always starts fresh.
	OptState string

	// Checkpoints, when set, keeps the trainable state after every step
	// (the step checkpoints an auditor bisects); nil keeps none.
	Checkpoints *commitment.Store

	// startOpt, set by Replay, is the inner optimizer state the replayed
	// round starts from (the trainer's kept one); OptState is then "".
	startOpt *engine.OptState
}

// Data is the trainer's local dataset.
type Data struct {
	Dataset *datasets.Dataset
	// Instruct marks instruction data: Dataset's samples are records as
	// instruct.ReadDataset reads them, trained with the model's chat
	// template, the loss on the assistant tokens and documents packed
	// without attending across each other.
	Instruct bool
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
	// OptSteps is how many AdamW steps the inner optimizer state the
	// round started from had taken (0: fresh moments), with Task.OptState.
	OptSteps int
	// OptNote says why a saved inner optimizer state was not used, or
	// could not be saved ("" when all went well or there is none).
	OptNote string
	// Dataset is the dataset the update names (the trainer's own, or a
	// published one for a trainer with none), Ranges the published
	// samples it trained on and DataSamples how many samples it trained
	// on in all; the node fills them in, not the backend.
	Dataset     string
	Ranges      []ledger.SampleRange
	DataSamples uint64
	// Commitment commits to the training's inputs and per-step states
	// (model/commitment); the backend fills it.
	Commitment *ledger.TrainingCommitment
	// stepDigests are the digests of the state after each step.
	stepDigests []string
	// inputs are the training's inputs (its commitment's preimage).
	inputs commitment.Inputs
}

// Backend trains one task on local data. Implementations must be
// deterministic for a given task (its seed included).
type Backend interface {
	Fit(ctx context.Context, t Task, d Data) (Update, error)
}

// GorgoniaBackend trains with model/gorgoniaref's Gorgonia graph on the CPU
// (DeviceGorgonia), the autodiff reference the engine is tested against.
type GorgoniaBackend struct {
	// Progress, if set, is called after every step.
	Progress func(step int, loss float64)
}

var _ Backend = (*GorgoniaBackend)(nil)

// Fit implements Backend.
func (b *GorgoniaBackend) Fit(ctx context.Context, t Task, d Data) (Update, error) {
	return fit(ctx, DeviceGorgonia, startGorgonia, b.Progress, t, d)
}

// Lossy reports whether compression loses precision (f16, bf16, int8).
func Lossy(compression string) bool {
	return compression != "" && compression != "none"
}

// writeTaskUpdate writes the update of task t, whose trained tensors are ts,
// and returns its digest. Uncompressed updates are the trained weights (the
// model's, or the adapter's). A compressed update is the delta from the
// round's base — the global model (t.ModelDir) in full fine-tuning, the
// global adapter (t.Adapter) in LoRA — marked __metadata__
// fedtune.kind=delta: rounding the weights themselves to int8 costs more
// than the round moves them, rounding the delta costs a small part of it.
func writeTaskUpdate(t Task, path string, ts map[string]*model.Tensor) (string, error) {
	if t.Base != "" && t.Train.LoRA == nil {
		base, err := model.Load(t.ModelDir)
		if err != nil {
			return "", fmt.Errorf("%w: the round's base weights, to encode the update as a delta: %w", ErrTask, err)
		}
		if d, err := base.Digest(); err != nil || d != t.Base {
			return "", fmt.Errorf("%w: the round's base weights in %s have digest %s, the task says %s (%v)", ErrTask, t.ModelDir, d, t.Base, err)
		}
		return writeDelta(path, ts, base.Tensors, t.Compression, t.Int8Block, map[string]string{aggregator.MetaBase: t.Base})
	}
	if !Lossy(t.Compression) || (t.Train.LoRA != nil && t.Adapter == nil) {
		return WriteUpdate(path, ts, t.Compression, t.Int8Block)
	}
	if t.Train.LoRA != nil {
		return WriteDeltaUpdate(path, ts, t.Adapter.Tensors, t.Compression, t.Int8Block)
	}
	base, err := model.Load(t.ModelDir)
	if err != nil {
		return "", fmt.Errorf("%w: the round's base weights, to encode the update as a delta: %w", ErrTask, err)
	}
	return WriteDeltaUpdate(path, ts, base.Tensors, t.Compression, t.Int8Block)
}

// WriteDeltaUpdate writes ts − base, tensor by tensor, as WriteUpdate
// writes an update, with __metadata__ fedtune.kind=delta so that no reader
// takes it for weights: the aggregator adds it to the round's base (see
// aggregator.KindDelta) and model.Load refuses it. Every tensor of ts must
// be in base with the same shape.
func WriteDeltaUpdate(path string, ts, base map[string]*model.Tensor, compression string, block int) (string, error) {
	return writeDelta(path, ts, base, compression, block, nil)
}

// writeDelta is WriteDeltaUpdate with extra __metadata__ entries.
func writeDelta(path string, ts, base map[string]*model.Tensor, compression string, block int, extra map[string]string) (string, error) {
	delta := make(map[string]*model.Tensor, len(ts))
	for name, x := range ts {
		b, ok := base[name]
		if !ok {
			return "", fmt.Errorf("%w: delta update: tensor %q is not in the base", ErrTask, name)
		}
		if !slices.Equal(b.Shape, x.Shape) || len(b.Data) != len(x.Data) {
			return "", fmt.Errorf("%w: delta update: tensor %q has shape %v, the base %v", ErrTask, name, x.Shape, b.Shape)
		}
		d := make([]float32, len(x.Data))
		for i, v := range x.Data {
			d[i] = v - b.Data[i]
		}
		delta[name] = &model.Tensor{Shape: x.Shape, Data: d}
	}
	meta := map[string]string{aggregator.MetaKind: aggregator.KindDelta}
	for k, v := range extra {
		meta[k] = v
	}
	return writeUpdate(path, delta, compression, block, meta)
}

// WriteUpdate writes tensors as a canonical safetensors file in the given
// compression (none: F32, f16, bf16, or int8 with per-block scales) and
// returns the file's SHA-256. The tensors are full weights (of a model or
// an adapter); see WriteDeltaUpdate for a difference to a base.
func WriteUpdate(path string, ts map[string]*model.Tensor, compression string, block int) (string, error) {
	return writeUpdate(path, ts, compression, block, nil)
}

// writeUpdate is WriteUpdate with extra __metadata__ entries.
func writeUpdate(path string, ts map[string]*model.Tensor, compression string, block int, extra map[string]string) (string, error) {
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
	meta := extra
	if compression == "int8" {
		var err error
		if out, meta, err = aggregator.QuantizeTensors(nil, out, block, extra); err != nil {
			return "", fmt.Errorf("quantize update: %w", err)
		}
	}
	return safetensors.WriteFile(path, out, meta)
}
