package trainer

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/safetensors"
)

// Phases of an OpFinding: where in the first differing step the first
// difference the evidence shows lies.
const (
	// OpSteps: the trainer committed fewer steps than the task asks; the
	// named step is the first it did not take.
	OpSteps = "steps"
	// OpBatch: the samples of the step's batch in the trainer's disclosed
	// inputs are not the replay's.
	OpBatch = "batch"
	// OpUpdate: the step's AdamW update of OpFinding.Tensor gives another
	// value in the trainer's checkpoint than in the replay.
	OpUpdate = "update"
	// OpUnknown: no proved checkpoint after the step, so no operation
	// can be compared.
	OpUnknown = "unknown"
)

// OpFinding names the first operation within the first differing step
// (Verdict.FirstBadStep) whose result differs from the replay's.
//
// What "first operation" means here. A trainer commits the digest of its
// trainable state after every step, not the result of each operation, so
// the operations an auditor can check are those whose results are in the
// committed state: the optimizer's update of each trainable tensor. The
// state before the step is the trainer's proved checkpoint of the step
// before (or, at step 1, the committed starting state), and bisection
// established that it is bit for bit the replay's own; the replay re-runs
// the step from it with model/engine's operation trace on (Trace: the
// digest of every operation's output, forward layer by layer, the loss,
// backward, each tensor's gradient, the clipping scale and each tensor's
// update) and compares each update's digest with the same tensor in the
// trainer's proved checkpoint after the step. The first tensor, in the
// step's update order, whose value differs is named (Tensor, Where).
//
// What agrees is inferred and said: a tensor whose update agrees bit for
// bit needs the same loss, the same gradients above it and the same
// clipping scale, so when any agrees the forward pass and the loss agree
// (ForwardAgrees); when none does, the difference lies at or before the
// loss (the batch, the dropout masks, the learning rate) or the trainer's
// state does not come from a training step at all. The batch is checked
// when the trainer discloses its inputs (commitment.InputsFile, proved
// against the committed inputs digest): a batch whose samples are not the
// replay's is named first (Phase OpBatch), since every operation of the
// step follows from it.
type OpFinding struct {
	Step  int    `json:"step"`
	Phase string `json:"phase"`
	// Tensor is the first trainable tensor, in update order, whose value
	// after the step differs; Where says it for people ("layer 3 q_proj
	// lora_B").
	Tensor string `json:"tensor,omitempty"`
	Where  string `json:"where,omitempty"`
	// Differ lists every differing tensor in update order, of Tensors
	// trainable tensors.
	Differ  []string `json:"differ,omitempty"`
	Tensors int      `json:"tensors,omitempty"`
	// ForwardAgrees: some tensor's update agrees bit for bit, so the
	// forward pass, the loss and the clipping scale are the replay's.
	ForwardAgrees bool `json:"forward_agrees"`
	// BatchChecked: the trainer disclosed its inputs and they prove, so
	// the step's batch was compared; Batch and ReplayBatch are its sample
	// IDs when they differ.
	BatchChecked bool     `json:"batch_checked"`
	Batch        []string `json:"batch,omitempty"`
	ReplayBatch  []string `json:"replay_batch,omitempty"`
	// BatchesFrom, when the batches were compared, is the first step
	// whose batch differs (0: none). It can come before Step: AdamW's
	// first update moves each weight by the sign of its gradient, so
	// another batch can leave the same state.
	BatchesFrom int `json:"batches_from,omitempty"`
	// Trace is the replay's operation trace of the step.
	Trace []engine.TraceOp `json:"trace,omitempty"`
	// Text says the finding in one line.
	Text string `json:"text"`
}

// locateOp fills v.Op for the first differing step k: see OpFinding.
// disclosed are the trainer's disclosed inputs when they prove against the
// committed digest (nil otherwise), replayed the replay's own.
func locateOp(ctx context.Context, t Task, d Data, v *Verdict, claim Claim, ckpt *commitment.Store, disclosed, replayed *commitment.Inputs, replayDigests []string) error {
	k := v.FirstBadStep
	f := &OpFinding{Step: k}
	v.Op = f
	c := claim.Commitment
	if uint64(k) > c.Steps {
		f.Phase = OpSteps
		f.Text = fmt.Sprintf("step %d: the trainer committed %d steps and took no step %d (the task asks %d)", k, c.Steps, k, len(replayDigests))
		return nil
	}
	var batchNote string
	if disclosed != nil {
		f.BatchChecked = true
		f.BatchesFrom = commitment.BatchDiffers(disclosed.Batches, replayed.Batches)
		got, want := at(disclosed.Batches, k), at(replayed.Batches, k)
		if commitment.BatchDiffers([][]string{got}, [][]string{want}) != 0 {
			f.Batch, f.ReplayBatch = got, want
			f.Phase = OpBatch
			batchNote = fmt.Sprintf("the batch: the trainer's disclosed inputs give it samples %s, the replay %s", commitment.ShortIDs(got), commitment.ShortIDs(want))
		}
	}
	// The trainer's proved state after step k.
	var after *safetensors.File
	if ckpt != nil {
		disc, derr := ckpt.Digests(claim.Job, claim.Round)
		cp := commitment.Checkpoint{Step: k, Err: derr}
		if derr == nil {
			cp = ckpt.Prove(claim.Job, claim.Round, c.StepRoot, c.Steps, k, disc)
		}
		if cp.Err == nil {
			p, err := ckpt.Path(claim.Job, claim.Round, k)
			if err != nil {
				return err
			}
			if after, err = safetensors.Open(p); err != nil {
				// It proved, so it is the committed state: a state
				// that is no safetensors file is no training's.
				f.Phase = OpUpdate
				f.Text = fmt.Sprintf("step %d: the committed state after the step is not a safetensors file (%v)", k, err)
				return nil
			}
			defer after.Close()
		}
	}
	if after == nil {
		if f.Phase == "" {
			f.Phase = OpUnknown
		}
		f.Text = fmt.Sprintf("step %d: no proved checkpoint of the state after the step: no operation can be compared", k)
		if batchNote != "" {
			f.Text = fmt.Sprintf("step %d: first difference in %s", k, batchNote)
		}
		return nil
	}
	ops, pre, err := traceStep(ctx, t, d, k)
	if err != nil {
		return fmt.Errorf("trace of step %d: %w", k, err)
	}
	if k >= 2 && k-2 < len(replayDigests) && pre != replayDigests[k-2] {
		return fmt.Errorf("trace of step %d: the re-run's state before the step (%s) is not the replay's (%s): the replay is not deterministic", k, pre, replayDigests[k-2])
	}
	f.Trace = ops
	seen := map[string]bool{}
	grads := map[string]string{}
	agree := 0 // tensors with a non-zero gradient whose update agrees
	for _, op := range ops {
		if op.Phase == engine.PhaseGradient {
			grads[op.Name] = op.Digest
		}
		if op.Phase != engine.PhaseUpdate {
			continue
		}
		f.Tensors++
		seen[op.Name] = true
		got, err := after.Float32s(op.Name)
		switch {
		case err != nil || engine.TensorDigest(got) != op.Digest:
			f.Differ = append(f.Differ, op.Name)
		case grads[op.Name] != engine.TensorDigest(make([]float32, len(got))):
			// An update that depends on the loss agrees; one with a
			// zero gradient (a fresh LoRA A at step 1) shows nothing.
			agree++
		}
	}
	for _, ti := range after.Tensors() {
		if !seen[ti.Name] {
			f.Differ = append(f.Differ, ti.Name) // a tensor the task does not train
		}
	}
	f.ForwardAgrees = agree > 0
	if len(f.Differ) > 0 {
		f.Tensor, f.Where = f.Differ[0], DescribeTensor(f.Differ[0])
	}
	if f.Phase == "" {
		f.Phase = OpUpdate
	}
	var b strings.Builder
	fmt.Fprintf(&b, "step %d: first difference in ", k)
	switch {
	case f.Phase == OpBatch:
		fmt.Fprintf(&b, "%s; so the step runs on other tokens from its first operation (the embedding) on", batchNote)
		if f.Tensor != "" {
			fmt.Fprintf(&b, " (%d of %d trainable tensors differ after it)", len(f.Differ), f.Tensors)
		}
	case f.Tensor == "":
		// Cannot happen when the step's digests differ; say so if it does.
		fmt.Fprintf(&b, "no tensor: every update agrees with the trainer's checkpoint")
	case f.ForwardAgrees:
		fmt.Fprintf(&b, "%s (AdamW update), %d of %d trainable tensors differ; forward and loss agree (the updates of %d tensors with non-zero gradients agree bit for bit)",
			f.Where, len(f.Differ), f.Tensors, agree)
	default:
		if len(f.Differ) >= f.Tensors {
			fmt.Fprintf(&b, "%s (AdamW update), every one of the %d trainable tensors differs", f.Where, f.Tensors)
		} else {
			fmt.Fprintf(&b, "%s (AdamW update), %d of %d trainable tensors differ, every one with a non-zero gradient", f.Where, len(f.Differ), f.Tensors)
		}
		if f.BatchChecked {
			fmt.Fprintf(&b, "; the state before the step and its batch are the committed ones, so forward, loss and gradients are the replay's: the state after the step does not follow from them")
		} else {
			fmt.Fprintf(&b, "; the forward pass or the loss may differ (no proved disclosure of the trainer's inputs to compare the batch with)")
		}
	}
	if f.BatchesFrom > 0 && f.BatchesFrom < k {
		fmt.Fprintf(&b, "; the batches already differ from step %d, whose state agrees none the less", f.BatchesFrom)
	}
	f.Text = b.String()
	return nil
}

// traceStep re-runs task t on d on the Host engine up to step k with the
// operation trace on for step k; it returns the trace and the digest of
// the state before step k ("" for k = 1).
func traceStep(ctx context.Context, t Task, d Data, k int) ([]engine.TraceOp, string, error) {
	m, f, err := loadTask(t, d)
	if err != nil {
		return nil, "", err
	}
	src, bsrc := f.source(t.Train)
	var opt *optIO
	if t.startOpt != nil {
		opt = &optIO{In: t.startOpt}
	}
	var ops []engine.TraceOp
	rec := &commitment.Recorder{}
	tr := &stepTrace{At: k, Fn: func(op engine.TraceOp) { ops = append(ops, op) }}
	if _, err := runTraced(ctx, DeviceHost, startEngine(engineDevices[DeviceHost]), m, t.Adapter, t.Train, src, bsrc, opt, rec, tr); err != nil {
		return nil, "", err
	}
	ds := rec.Digests()
	if len(ds) != k {
		return nil, "", fmt.Errorf("the re-run took %d steps, not %d", len(ds), k)
	}
	pre := ""
	if k >= 2 {
		pre = ds[k-2]
	}
	return ops, pre, nil
}

// tensorName splits HF and PEFT tensor names: layer, module, LoRA matrix.
var tensorName = regexp.MustCompile(`layers\.([0-9]+)\.(?:self_attn|mlp)?\.?([A-Za-z0-9_]+)(?:\.(lora_[AB]))?(?:\.default)?\.weight$`)

// DescribeTensor says which trainable tensor name is, for people: "layer 3
// q_proj lora_B", "layer 0 input_layernorm weight", "model.embed_tokens.weight".
func DescribeTensor(name string) string {
	m := tensorName.FindStringSubmatch(name)
	if m == nil {
		return name
	}
	part := m[3]
	if part == "" {
		part = "weight"
	}
	return fmt.Sprintf("layer %s %s %s", m[1], m[2], part)
}

func at(bs [][]string, step int) []string {
	if step < 1 || step > len(bs) {
		return nil
	}
	return bs[step-1]
}
