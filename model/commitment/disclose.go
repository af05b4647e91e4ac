package commitment

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/strictjson"
)

// DigestsFile is the file, in a round's checkpoint folder, listing the
// digest of every step's state: what the trainer discloses so that each
// checkpoint can be proved against the committed step root.
const DigestsFile = "steps.json"

// MaxDisclosedSteps bounds the digests a disclosure may list.
const MaxDisclosedSteps = 1 << 24

// disclosure is DigestsFile's content.
type disclosure struct {
	Digests []string `json:"digests"`
}

// SaveDigests writes the digests of a round's steps (step 1's first) next
// to its checkpoints, atomically.
func (s *Store) SaveDigests(job string, round uint64, digests []string) error {
	if _, err := leaves(digests); err != nil {
		return err
	}
	p, err := s.Path(job, round, 1)
	if err != nil {
		return err
	}
	js, err := json.Marshal(disclosure{Digests: digests})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(filepath.Dir(p), DigestsFile), js, 0o644)
}

// Digests reads the digests a round's folder discloses.
func (s *Store) Digests(job string, round uint64) ([]string, error) {
	p, err := s.Path(job, round, 1)
	if err != nil {
		return nil, err
	}
	p = filepath.Join(filepath.Dir(p), DigestsFile)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var d disclosure
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, p, err)
	}
	if len(d.Digests) > MaxDisclosedSteps {
		return nil, fmt.Errorf("%w: %s: %d digests, limit %d", ErrInvalid, p, len(d.Digests), MaxDisclosedSteps)
	}
	if _, err := leaves(d.Digests); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return d.Digests, nil
}

var stepFile = regexp.MustCompile(`^step-([0-9]{6,})\.safetensors$`)

// Steps lists the steps (1-based, ascending) a round's folder holds a
// checkpoint of.
func (s *Store) Steps(job string, round uint64) ([]int, error) {
	p, err := s.Path(job, round, 1)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Dir(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var steps []int
	for _, e := range ents {
		m := stepFile.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		if n, err := strconv.Atoi(m[1]); err == nil && n >= 1 {
			steps = append(steps, n)
		}
	}
	slices.Sort(steps)
	return steps, nil
}

// Checkpoint is one step's checkpoint as proved against a step root.
type Checkpoint struct {
	Step   int
	Digest string // SHA-256 of the checkpoint file
	// Err is why the checkpoint does not prove against the root: the
	// trainer's checkpoint of that step is then a lie (nil: it proves).
	Err error
}

// Prove reads the checkpoint of step and proves it against root, a tree
// of steps leaves, with the proof the round's disclosed digests give.
func (s *Store) Prove(job string, round uint64, root string, steps uint64, step int, disclosed []string) Checkpoint {
	c := Checkpoint{Step: step}
	data, err := s.Load(job, round, step)
	if err != nil {
		c.Err = err
		return c
	}
	c.Digest = digest.Bytes(data)
	if uint64(len(disclosed)) != steps {
		c.Err = fmt.Errorf("the trainer discloses %d step digests for %d committed steps", len(disclosed), steps)
		return c
	}
	p, err := StepProof(disclosed, step)
	if err != nil {
		c.Err = err
		return c
	}
	if err := VerifyStep(root, steps, uint64(step), c.Digest, p); err != nil {
		c.Err = fmt.Errorf("the checkpoint of step %d (SHA-256 %s) is not step %d of step root %s", step, c.Digest, step, root)
	}
	return c
}

// InputsFile is the file, in a round's checkpoint folder, holding the
// trainer's training inputs (Inputs, as JSON): what it discloses so that
// an auditor whose replay gives another inputs digest can say which input
// differs (the seed, a hyperparameter, the samples of a step's batch). The
// file proves against the committed inputs digest (Inputs.Digest), or it
// is a lie.
const InputsFile = "inputs.json"

// MaxInputsBytes bounds the disclosed inputs file an auditor reads.
const MaxInputsBytes = 1 << 28

// SaveInputs writes a round's training inputs next to its checkpoints,
// atomically.
func (s *Store) SaveInputs(job string, round uint64, in Inputs) error {
	if err := in.Validate(); err != nil {
		return err
	}
	p, err := s.Path(job, round, 1)
	if err != nil {
		return err
	}
	js, err := json.Marshal(in)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(filepath.Dir(p), InputsFile), js, 0o644)
}

// Inputs reads the training inputs a round's folder discloses (strictly:
// one reading, every field known) and validates them; it does not check
// them against a commitment (compare Inputs.Digest with it).
func (s *Store) Inputs(job string, round uint64) (Inputs, error) {
	p, err := s.Path(job, round, 1)
	if err != nil {
		return Inputs{}, err
	}
	p = filepath.Join(filepath.Dir(p), InputsFile)
	f, err := os.Open(p)
	if err != nil {
		return Inputs{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxInputsBytes+1))
	if err != nil {
		return Inputs{}, err
	}
	if len(data) > MaxInputsBytes {
		return Inputs{}, fmt.Errorf("%w: %s: over %d bytes", ErrInvalid, p, MaxInputsBytes)
	}
	var in Inputs
	if err := strictjson.Unmarshal(data, &in); err != nil {
		return Inputs{}, fmt.Errorf("%w: %s: %w", ErrInvalid, p, err)
	}
	if err := in.Validate(); err != nil {
		return Inputs{}, fmt.Errorf("%s: %w", p, err)
	}
	return in, nil
}

// Differences lists, in words, what differs between the inputs a trainer
// discloses (in) and an auditor's replay's (want): the base model, the
// starting adapter and optimizer state, each hyperparameter, the step
// count and, for each step, its batch's samples (the first few steps
// only, then a count). Empty when they are the same.
func (in *Inputs) Differences(want *Inputs) []string {
	var out []string
	field := func(name string, got, want any) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if string(g) != string(w) {
			out = append(out, fmt.Sprintf("%s %s, the task's %s", name, g, w))
		}
	}
	field("base model", in.BaseModel, want.BaseModel)
	field("starting adapter", in.Adapter, want.Adapter)
	field("starting optimizer state", in.OptState, want.OptState)
	h, wh := in.Hyperparams, want.Hyperparams
	field("lora", h.LoRA, wh.LoRA)
	field("steps", h.Steps, wh.Steps)
	field("batch", h.Batch, wh.Batch)
	field("seq_len", h.SeqLen, wh.SeqLen)
	field("lr", h.LR, wh.LR)
	field("weight_decay", h.WeightDecay, wh.WeightDecay)
	field("clip_norm", h.ClipNorm, wh.ClipNorm)
	field("beta1", h.Beta1, wh.Beta1)
	field("beta2", h.Beta2, wh.Beta2)
	field("eps", h.Eps, wh.Eps)
	field("warmup", h.Warmup, wh.Warmup)
	field("schedule", h.Schedule, wh.Schedule)
	field("seed", h.Seed, wh.Seed)
	if n := BatchDiffers(in.Batches, want.Batches); n > 0 {
		out = append(out, fmt.Sprintf("step %d's batch samples %s, the replay's %s", n, ShortIDs(at(in.Batches, n)), ShortIDs(at(want.Batches, n))))
	}
	return out
}

// BatchDiffers returns the first step (1-based) whose batch's sample IDs
// differ between got and want, 0 when none does.
func BatchDiffers(got, want [][]string) int {
	for i := range max(len(got), len(want)) {
		if i >= len(got) || i >= len(want) || !slices.Equal(got[i], want[i]) {
			return i + 1
		}
	}
	return 0
}

func at(bs [][]string, step int) []string {
	if step < 1 || step > len(bs) {
		return nil
	}
	return bs[step-1]
}

// ShortIDs writes sample IDs for people: each cut to 12 characters, the
// first 4, then how many more.
func ShortIDs(ids []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, id := range ids {
		if i == 4 {
			fmt.Fprintf(&b, " … %d more", len(ids)-4)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		if len(id) > 12 {
			id = id[:12]
		}
		b.WriteString(id)
	}
	b.WriteByte(']')
	return b.String()
}
