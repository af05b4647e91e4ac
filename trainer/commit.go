package trainer

import (
	"fmt"
	"path/filepath"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
)

// DefaultAuditWindowRounds is how many of a job's newest rounds a trainer
// keeps step checkpoints for when its config names no audit_window_rounds.
const DefaultAuditWindowRounds = 4

// MaxAuditWindowRounds bounds Config.AuditWindowRounds.
const MaxAuditWindowRounds = 1 << 16

// MaxCheckpointEvery bounds Config.CheckpointEvery.
const MaxCheckpointEvery = 1 << 20

// Checkpoints returns the store of the node's step checkpoints:
// WorkDir/checkpoints, keeping AuditWindowRounds rounds of each job and
// the checkpoint of every CheckpointEvery-th step.
func (c *Config) Checkpoints() *commitment.Store {
	keep := c.AuditWindowRounds
	if keep == 0 {
		keep = DefaultAuditWindowRounds
	}
	return &commitment.Store{Dir: filepath.Join(c.WorkDir, "checkpoints"), Keep: keep, Every: c.CheckpointEvery}
}

// sessionState returns the trainable state of s: the adapter's tensors
// with LoRA, every weight otherwise.
func sessionState(s session, lora bool) commitment.StateFunc {
	return func() (map[string]*model.Tensor, error) {
		if lora {
			ad := s.Adapter()
			if ad == nil {
				return nil, fmt.Errorf("reading the adapter back failed")
			}
			return ad.Tensors, nil
		}
		m := s.Model()
		if m == nil {
			return nil, fmt.Errorf("reading the weights back failed")
		}
		return m.Tensors, nil
	}
}

// TaskInputs returns the commitment inputs of task t run on base model m
// with the given per-step sample IDs.
func TaskInputs(m *model.Model, t Task, batches [][]string) (commitment.Inputs, error) {
	base, err := m.Digest()
	if err != nil {
		return commitment.Inputs{}, fmt.Errorf("base model digest: %w", err)
	}
	in := commitment.Inputs{BaseModel: base, Hyperparams: commitment.HyperparamsOf(t.Train), Batches: batches}
	if t.Adapter != nil {
		if in.Adapter, err = t.Adapter.Digest(); err != nil {
			return commitment.Inputs{}, fmt.Errorf("starting adapter digest: %w", err)
		}
	}
	return in, nil
}

// commit returns the training commitment of a finished run with inputs in
// (their batches filled in) recorded by rec.
func commit(in commitment.Inputs, rec *commitment.Recorder) (*ledger.TrainingCommitment, error) {
	d, err := in.Digest()
	if err != nil {
		return nil, fmt.Errorf("trainer: commitment: %w", err)
	}
	n, root, err := rec.Root()
	if err != nil {
		return nil, fmt.Errorf("trainer: commitment: %w", err)
	}
	return &ledger.TrainingCommitment{InputsDigest: d, Steps: n, StepRoot: root}, nil
}
