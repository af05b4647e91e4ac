package commitment

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// StateFunc returns the trainable state after a step: the adapter's
// tensors for LoRA, every weight for a full fine-tune.
type StateFunc func() (map[string]*model.Tensor, error)

// Tensors returns ts as F32 safetensors tensors, sorted by name: the form
// whose canonical encoding model.Adapter.Digest and model.Model.Digest hash.
func Tensors(ts map[string]*model.Tensor) ([]safetensors.Tensor, error) {
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]safetensors.Tensor, 0, len(names))
	for _, n := range names {
		t, err := safetensors.FromFloat32(n, safetensors.F32, ts[n].Shape, ts[n].Data)
		if err != nil {
			return nil, fmt.Errorf("state tensor %s: %w", n, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// Recorder is a model.Stepper that records the digest of the trainable
// state after every step of the Stepper it wraps and, when Store is set,
// keeps that state as a checkpoint of job Job, round Round.
type Recorder struct {
	Stepper model.Stepper
	State   StateFunc
	Store   *Store // optional
	Job     string
	Round   uint64
	// Last is the run's last step: its checkpoint is kept whatever
	// Store.Every says (0: not known).
	Last int

	digests []string
}

var _ model.BatchStepper = (*Recorder)(nil)

// Step takes one step and records the state after it.
func (r *Recorder) Step(batch [][]int) (float64, error) {
	loss, err := r.Stepper.Step(batch)
	if err != nil {
		return loss, err
	}
	return loss, r.record()
}

// StepBatch takes one step on a batch with loss weights, segments and
// positions (the wrapped Stepper must be a model.BatchStepper) and records
// the state after it.
func (r *Recorder) StepBatch(b model.Batch) (float64, error) {
	bs, ok := r.Stepper.(model.BatchStepper)
	if !ok {
		return 0, fmt.Errorf("commitment: the recorded stepper %T cannot take packed batches", r.Stepper)
	}
	loss, err := bs.StepBatch(b)
	if err != nil {
		return loss, err
	}
	return loss, r.record()
}

// record records the state after the step just taken.
func (r *Recorder) record() error {
	st, err := r.State()
	if err != nil {
		return fmt.Errorf("state after step %d: %w", r.Stepper.StepCount(), err)
	}
	ts, err := Tensors(st)
	if err != nil {
		return err
	}
	var d string
	if step := r.Stepper.StepCount(); r.Store != nil && r.Store.Keeps(step, r.Last) {
		d, err = r.Store.Save(r.Job, r.Round, step, ts)
	} else {
		d, err = safetensors.Digest(ts)
	}
	if err != nil {
		return fmt.Errorf("state after step %d: %w", r.Stepper.StepCount(), err)
	}
	r.digests = append(r.digests, d)
	return nil
}

// StepCount is the wrapped Stepper's.
func (r *Recorder) StepCount() int { return r.Stepper.StepCount() }

// Digests returns the state digests recorded so far, step 1's first.
func (r *Recorder) Digests() []string { return slices.Clone(r.digests) }

// Root returns the step count and the Merkle root over the recorded
// digests.
func (r *Recorder) Root() (uint64, string, error) {
	root, err := StepRoot(r.digests)
	return uint64(len(r.digests)), root, err
}

// Store keeps step checkpoints under Dir, Dir/JOB/ROUND/step-NNNNNN.safetensors,
// and prunes each job to its newest Keep rounds (0: keep all). With Every
// above 1 a Recorder keeps the checkpoint of every Every-th step and of
// the last only: the commitment and the disclosed digests (DigestsFile)
// still cover every step, so an auditor still pins the first differing
// step; the state after a step whose checkpoint was not kept is then not
// at hand for naming the operation within it.
type Store struct {
	Dir   string
	Keep  int
	Every int
}

// Keeps reports whether a Recorder keeps the checkpoint of step of a run
// whose last step is last (0: not known).
func (s *Store) Keeps(step, last int) bool {
	return s.Every <= 1 || step%s.Every == 0 || step == last
}

// jobName is what a job ID must look like to name a folder.
var jobName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Path returns the checkpoint file of a step (1-based).
func (s *Store) Path(job string, round uint64, step int) (string, error) {
	if !jobName.MatchString(job) || job == "." || job == ".." {
		return "", fmt.Errorf("%w: job ID %q cannot name a checkpoint folder", ErrInvalid, job)
	}
	if step < 1 {
		return "", fmt.Errorf("%w: step %d", ErrInvalid, step)
	}
	return filepath.Join(s.Dir, job, strconv.FormatUint(round, 10), fmt.Sprintf("step-%06d.safetensors", step)), nil
}

// StartOptStatePath returns where the inner optimizer state a round
// started from is kept, beside its step checkpoints (and pruned with
// them): Dir/JOB/ROUND/start-optstate.safetensors. A pre-training
// trainer writes it (atomically) so that an auditor can replay a round
// that did not start from fresh moments.
func (s *Store) StartOptStatePath(job string, round uint64) (string, error) {
	p, err := s.Path(job, round, 1)
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(p), StartOptStateFile), nil
}

// StartOptStateFile is the name of the starting optimizer state file in
// a round's checkpoint folder (Store.StartOptStatePath).
const StartOptStateFile = "start-optstate.safetensors"

// Save writes a step's state as canonical safetensors (atomically) and
// returns its digest, the SHA-256 of the file; then prunes the job's
// rounds beyond Keep.
func (s *Store) Save(job string, round uint64, step int, ts []safetensors.Tensor) (string, error) {
	p, err := s.Path(job, round, step)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	d, err := safetensors.WriteFile(p, ts, nil) // atomic; the SHA-256 of the canonical bytes
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: %w", p, err)
	}
	return d, s.Prune(job)
}

// Load reads a step's checkpoint.
func (s *Store) Load(job string, round uint64, step int) ([]byte, error) {
	p, err := s.Path(job, round, step)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// Prune removes a job's rounds but the newest Keep (by round number).
func (s *Store) Prune(job string) error {
	if s.Keep <= 0 {
		return nil
	}
	if _, err := s.Path(job, 0, 1); err != nil {
		return err
	}
	ents, err := os.ReadDir(filepath.Join(s.Dir, job))
	if err != nil {
		return err
	}
	var rounds []uint64
	for _, e := range ents {
		if r, err := strconv.ParseUint(e.Name(), 10, 64); err == nil && e.IsDir() && strconv.FormatUint(r, 10) == e.Name() {
			rounds = append(rounds, r)
		}
	}
	slices.Sort(rounds)
	var errs []error
	for len(rounds) > s.Keep {
		errs = append(errs, os.RemoveAll(filepath.Join(s.Dir, job, strconv.FormatUint(rounds[0], 10))))
		rounds = rounds[1:]
	}
	return errors.Join(errs...)
}

// RunSteps is model.RunSteps over a Recorder.
func RunSteps(ctx context.Context, r *Recorder, steps int, src model.BatchSource) (float64, error) {
	return model.RunSteps(ctx, r, steps, src)
}
