package trainer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/safetensors"
)

// The inner optimizer state file of a pretrain job (DiLoCo keeps each
// worker's AdamW moments from one round to the next): a safetensors file
// of F32 tensors "<parameter>.exp_avg" and "<parameter>.exp_avg_sq"
// (PyTorch's names for AdamW's moments), with __metadata__ saying what it
// is (OptStateKind), whose job it is and the AdamW steps the moments have
// taken. It is the trainer's own file, under its work folder
// (OptStatePath), written atomically after every round it trains.
const (
	// OptStateKind is __metadata__ "fedtune.kind" of the file.
	OptStateKind = "adamw-state"
	// optMetaKind, optMetaJob, optMetaSteps and optMetaRound are its keys.
	optMetaKind  = "fedtune.kind"
	optMetaJob   = "fedtune.job"
	optMetaSteps = "fedtune.steps"
	optMetaRound = "fedtune.round"
	optSuffixM   = ".exp_avg"
	optSuffixV   = ".exp_avg_sq"
)

// ErrOptState is wrapped by errors about an inner optimizer state file.
var ErrOptState = errors.New("trainer: inner optimizer state")

var optJobPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// OptStatePath is where a trainer whose work folder is workDir keeps the
// inner optimizer state of pretrain job jobID: workDir/optstate/<job>.
// safetensors. A job ID that is not a job name (coordinator's pattern:
// letters, digits, '.', '_', '-', starting with a letter or digit) is an
// error, so a coordinator cannot make the trainer write outside the folder.
func OptStatePath(workDir, jobID string) (string, error) {
	if !optJobPattern.MatchString(jobID) {
		return "", fmt.Errorf("%w: job ID %q is not a job name", ErrOptState, jobID)
	}
	return filepath.Join(workDir, "optstate", jobID+".safetensors"), nil
}

// optStateDomain prefixes what OptStateDigest hashes.
const optStateDomain = "fedtune/adamw-state/v1\n"

// OptStateDigest returns the digest of inner optimizer state s that a
// training commitment's inputs (commitment.Inputs.OptState) name as the
// state a round started from: the SHA-256 of a domain prefix, the AdamW
// step count and the safetensors digest of the moments (F32 tensors
// "<parameter>.exp_avg" and "<parameter>.exp_avg_sq", sorted by name).
// The file's __metadata__ (job, round) is not part of it.
func OptStateDigest(s *engine.OptState) (string, error) {
	ts := make(map[string]*model.Tensor, 2*len(s.M))
	for n, m := range s.M {
		ts[n+optSuffixM] = m
	}
	for n, v := range s.V {
		ts[n+optSuffixV] = v
	}
	st, err := commitment.Tensors(ts)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrOptState, err)
	}
	d, err := safetensors.Digest(st)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrOptState, err)
	}
	return digest.Bytes(fmt.Appendf(nil, "%s%d\n%s", optStateDomain, s.Steps, d)), nil
}

// SaveOptState writes s, the state after round of job, to path atomically
// (nothing is left half written; an earlier file stays until the new one
// is complete).
func SaveOptState(path, job string, round uint64, s *engine.OptState) error {
	ts := make([]safetensors.Tensor, 0, 2*len(s.M))
	for name, m := range s.M {
		v := s.V[name]
		if v == nil {
			return fmt.Errorf("%w: %s has no second moment", ErrOptState, name)
		}
		for _, x := range []struct {
			suffix string
			tn     *model.Tensor
		}{{optSuffixM, m}, {optSuffixV, v}} {
			tn, err := safetensors.FromFloat32(name+x.suffix, safetensors.F32, x.tn.Shape, x.tn.Data)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrOptState, err)
			}
			ts = append(ts, tn)
		}
	}
	meta := map[string]string{optMetaKind: OptStateKind, optMetaJob: job, optMetaSteps: strconv.Itoa(s.Steps),
		optMetaRound: strconv.FormatUint(round, 10)}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrOptState, err)
	}
	if _, err := safetensors.WriteFile(path, ts, meta); err != nil {
		return fmt.Errorf("%w: write %s: %w", ErrOptState, path, err)
	}
	return nil
}

// LoadOptState reads the inner optimizer state of job at path and the
// round it was saved after. A file that is not one (another kind, another
// job, a step count that is not a number, a moment without its pair, a
// non-F32 tensor) is refused, naming what is wrong; the caller then starts
// with fresh moments. Whether the moments fit the model is
// engine.Trainer.SetOptState's check.
func LoadOptState(path, job string) (*engine.OptState, uint64, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrOptState, err)
	}
	defer f.Close()
	return decodeOptState(f, job)
}

// DecodeOptState is LoadOptState on a file's bytes; name labels errors.
func DecodeOptState(name string, data []byte, job string) (*engine.OptState, uint64, error) {
	f, err := safetensors.Parse(name, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrOptState, err)
	}
	return decodeOptState(f, job)
}

func decodeOptState(f *safetensors.File, job string) (*engine.OptState, uint64, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrOptState, f.Name(), fmt.Sprintf(format, args...))
	}
	meta := f.Metadata()
	if k := meta[optMetaKind]; k != OptStateKind {
		return nil, 0, bad("__metadata__ %s is %q, want %q", optMetaKind, k, OptStateKind)
	}
	if j := meta[optMetaJob]; j != job {
		return nil, 0, bad("the state of job %q, not of job %q", j, job)
	}
	steps, err := strconv.Atoi(meta[optMetaSteps])
	if err != nil || steps < 0 {
		return nil, 0, bad("__metadata__ %s %q is not a step count", optMetaSteps, meta[optMetaSteps])
	}
	round, err := strconv.ParseUint(meta[optMetaRound], 10, 64)
	if err != nil {
		return nil, 0, bad("__metadata__ %s %q is not a round", optMetaRound, meta[optMetaRound])
	}
	s := &engine.OptState{Steps: steps, M: map[string]*model.Tensor{}, V: map[string]*model.Tensor{}}
	for _, ti := range f.Tensors() {
		if ti.DType != safetensors.F32 {
			return nil, 0, bad("tensor %s is %s, want F32", ti.Name, ti.DType)
		}
		var into map[string]*model.Tensor
		var name string
		switch {
		case strings.HasSuffix(ti.Name, optSuffixV):
			into, name = s.V, strings.TrimSuffix(ti.Name, optSuffixV)
		case strings.HasSuffix(ti.Name, optSuffixM):
			into, name = s.M, strings.TrimSuffix(ti.Name, optSuffixM)
		default:
			return nil, 0, bad("tensor %s is neither an %s nor an %s", ti.Name, optSuffixM, optSuffixV)
		}
		data, err := f.Float32s(ti.Name)
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, 0, bad("tensor %s is cut short", ti.Name)
			}
			return nil, 0, fmt.Errorf("%w: %w", ErrOptState, err)
		}
		into[name] = &model.Tensor{Shape: slices.Clone(ti.Shape), Data: data}
	}
	for name := range s.M {
		if s.V[name] == nil {
			return nil, 0, bad("parameter %s has an %s but no %s", name, optSuffixM, optSuffixV)
		}
	}
	for name := range s.V {
		if s.M[name] == nil {
			return nil, 0, bad("parameter %s has an %s but no %s", name, optSuffixV, optSuffixM)
		}
	}
	return s, round, nil
}
