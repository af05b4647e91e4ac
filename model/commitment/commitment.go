package commitment

import (
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/model"
)

// ErrInvalid is wrapped by every error about malformed inputs or digests.
var ErrInvalid = errors.New("commitment: invalid")

// Hyperparams are the settings of a training task that change its result:
// model.TrainConfig without its progress callback.
type Hyperparams struct {
	LoRA        *model.LoRAConfig `json:"lora,omitempty"`
	Steps       int               `json:"steps"`
	Batch       int               `json:"batch"`
	SeqLen      int               `json:"seq_len"`
	LR          float64           `json:"lr"`
	WeightDecay float64           `json:"weight_decay"`
	ClipNorm    float64           `json:"clip_norm"`
	Beta1       float64           `json:"beta1"`
	Beta2       float64           `json:"beta2"`
	Eps         float64           `json:"eps"`
	Warmup      int               `json:"warmup"`
	Schedule    string            `json:"schedule"`
	Seed        uint64            `json:"seed"`
}

// HyperparamsOf returns cfg's hyperparameters (defaults filled).
func HyperparamsOf(cfg model.TrainConfig) Hyperparams {
	cfg.FillDefaults()
	h := Hyperparams{Steps: cfg.Steps, Batch: cfg.Batch, SeqLen: cfg.SeqLen, LR: cfg.LR, WeightDecay: cfg.WeightDecay,
		ClipNorm: cfg.ClipNorm, Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, Warmup: cfg.Warmup, Schedule: cfg.Schedule, Seed: cfg.Seed}
	if cfg.LoRA != nil {
		l := *cfg.LoRA
		l.Targets = slices.Clone(l.Targets)
		h.LoRA = &l
	}
	return h
}

// Inputs are a training task's inputs.
type Inputs struct {
	BaseModel   string      `json:"base_model"`        // weight digest of the base model
	Adapter     string      `json:"adapter,omitempty"` // weight digest of the starting adapter; "" for a fresh one or full fine-tuning
	Hyperparams Hyperparams `json:"hyperparams"`
	// Batches holds, for each step in order, the IDs of the samples its
	// batch was cut from, in batch order.
	Batches [][]string `json:"batches"`
	// OptState is the digest of the inner optimizer state (AdamW's
	// moments and step count) the training started from: a pre-training
	// trainer keeps it from round to round. "" (left out of the encoding,
	// so tasks without it keep their digests) is fresh moments.
	OptState string `json:"opt_state,omitempty"`
}

// inputsDomain prefixes the encoding that Inputs.Digest hashes, so that
// the digest of a task's inputs cannot be the digest of anything else.
const inputsDomain = "fedtune/training-inputs/v1\n"

// Validate reports what is malformed in in.
func (in *Inputs) Validate() error {
	var errs []error
	if err := digest.Check("base_model", in.BaseModel); err != nil {
		errs = append(errs, err)
	}
	if in.Adapter != "" {
		if err := digest.Check("adapter", in.Adapter); err != nil {
			errs = append(errs, err)
		}
	}
	if in.OptState != "" {
		if err := digest.Check("opt_state", in.OptState); err != nil {
			errs = append(errs, err)
		}
	}
	if in.Hyperparams.Steps <= 0 {
		errs = append(errs, fmt.Errorf("hyperparams.steps: %d, want at least 1", in.Hyperparams.Steps))
	}
	if len(in.Batches) != in.Hyperparams.Steps {
		errs = append(errs, fmt.Errorf("batches: %d listed for %d steps", len(in.Batches), in.Hyperparams.Steps))
	}
	for i, b := range in.Batches {
		if len(b) == 0 {
			errs = append(errs, fmt.Errorf("batches[%d] is empty", i))
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: training inputs: %w", ErrInvalid, err)
	}
	return nil
}

// Digest validates in and returns the SHA-256 of its canonical encoding
// (the domain prefix, then its JSON: fields in declaration order, no
// whitespace).
func (in *Inputs) Digest() (string, error) {
	if err := in.Validate(); err != nil {
		return "", err
	}
	js, err := json.Marshal(in)
	if err != nil {
		return "", fmt.Errorf("%w: training inputs: %w", ErrInvalid, err)
	}
	return digest.Bytes(append([]byte(inputsDomain), js...)), nil
}

var hasher = rfc6962.New(crypto.SHA256)

// leaves decodes step digests into Merkle leaves (their raw bytes).
func leaves(steps []string) ([][]byte, error) {
	if len(steps) == 0 {
		return nil, fmt.Errorf("%w: no step digests", ErrInvalid)
	}
	out := make([][]byte, len(steps))
	for i, s := range steps {
		if err := digest.Check(fmt.Sprintf("step %d digest", i+1), s); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		out[i], _ = hex.DecodeString(s)
	}
	return out, nil
}

// StepRoot returns the RFC 6962 Merkle root (hex) over the step digests,
// step 1's first.
func StepRoot(steps []string) (string, error) {
	ls, err := leaves(steps)
	if err != nil {
		return "", err
	}
	f := &compact.RangeFactory{Hash: hasher.HashChildren}
	r := f.NewEmptyRange(0)
	for _, l := range ls {
		if err := r.Append(hasher.HashLeaf(l), nil); err != nil {
			return "", err
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(root), nil
}

// StepProof returns the inclusion proof of step (1-based) in the tree over
// steps.
func StepProof(steps []string, step int) ([][]byte, error) {
	ls, err := leaves(steps)
	if err != nil {
		return nil, err
	}
	if step < 1 || step > len(ls) {
		return nil, fmt.Errorf("%w: step %d of %d", ErrInvalid, step, len(ls))
	}
	// A small tree: hash every node (n log n) rather than keep one.
	var nodeHash func(lo, hi int) []byte
	nodeHash = func(lo, hi int) []byte {
		if hi-lo == 1 {
			return hasher.HashLeaf(ls[lo])
		}
		k := 1
		for k*2 < hi-lo {
			k *= 2
		}
		return hasher.HashChildren(nodeHash(lo, lo+k), nodeHash(lo+k, hi))
	}
	var path [][]byte
	lo, hi, i := 0, len(ls), step-1
	for hi-lo > 1 {
		k := 1
		for k*2 < hi-lo {
			k *= 2
		}
		if i < lo+k {
			path = append(path, nodeHash(lo+k, hi))
			hi = lo + k
		} else {
			path = append(path, nodeHash(lo, lo+k))
			lo += k
		}
	}
	slices.Reverse(path)
	return path, nil
}

// VerifyStep checks that stepDigest is step (1-based) of a tree of steps
// leaves with root, given its inclusion proof.
func VerifyStep(root string, steps uint64, step uint64, stepDigest string, p [][]byte) error {
	ls, err := leaves([]string{stepDigest})
	if err != nil {
		return err
	}
	r, err := hex.DecodeString(root)
	if err != nil || !digest.Valid(root) {
		return fmt.Errorf("%w: step root %q is not a digest", ErrInvalid, root)
	}
	if step < 1 || step > steps {
		return fmt.Errorf("%w: step %d of %d", ErrInvalid, step, steps)
	}
	if err := proof.VerifyInclusion(hasher, step-1, steps, hasher.HashLeaf(ls[0]), p, r); err != nil {
		return fmt.Errorf("step %d digest %s is not in the committed steps: %w", step, stepDigest, err)
	}
	return nil
}
