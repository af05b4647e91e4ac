package commitment

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
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
