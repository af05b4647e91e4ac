package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/eval"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// openEvalData opens a job's eval.data as the coordinator may read it,
// and says whether it is JSONL (else plain text). eval.data is either the
// digest of a blob in the artifact store (JSONL when its first non-space
// byte is '{') or a path relative to the configured eval data root that
// stays inside it: no absolute path, no "..", no symbolic link out of the
// root (os.Root enforces it as the file is opened). A job cannot make the
// coordinator read any other file. Errors name the field.
func (s *Service) openEvalData(job *Job) (*os.File, bool, error) {
	p := job.Eval.Data
	if digest.Valid(p) {
		f, err := s.cfg.Store.Open(p)
		if errors.Is(err, artifact.ErrNotFound) {
			return nil, false, fmt.Errorf("eval.data: blob %s is not in the coordinator's artifact store; upload it first", p)
		}
		if err != nil {
			return nil, false, fmt.Errorf("eval.data: %w", err)
		}
		var head [512]byte
		n, _ := f.ReadAt(head[:], 0)
		first := bytes.TrimLeft(head[:n], " \t\r\n")
		return f, len(first) > 0 && first[0] == '{', nil
	}
	root := s.cfg.EvalDataRoot
	switch {
	case root == "":
		return nil, false, fmt.Errorf("eval.data: %q is a path, but this coordinator has no eval_data_root; give the digest of an eval data blob uploaded to its artifact store", p)
	case filepath.IsAbs(p) || strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`):
		return nil, false, fmt.Errorf("eval.data: %q is an absolute path; give a path relative to the coordinator's eval_data_root, or a blob digest", p)
	case !filepath.IsLocal(p):
		return nil, false, fmt.Errorf("eval.data: %q leaves the coordinator's eval_data_root (\"..\" or an empty name); give a path inside it, or a blob digest", p)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, false, fmt.Errorf("eval.data: the coordinator's eval_data_root: %w", err)
	}
	defer r.Close()
	f, err := r.Open(p)
	if err != nil {
		return nil, false, fmt.Errorf("eval.data: %q in the coordinator's eval_data_root: %w", p, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, false, fmt.Errorf("eval.data: %q in the coordinator's eval_data_root is not a regular file", p)
	}
	return f, eval.IsDataset(p, false), nil
}

// checkEvalData refuses a job whose eval.data the coordinator may not or
// cannot read (LaunchJob, before anything is done).
func (s *Service) checkEvalData(ctx context.Context, job *Job) error {
	if job.Eval.Data == "" {
		return nil
	}
	f, _, err := s.openEvalData(job)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return s.evalDataNotUpdate(ctx, job)
}

// errEvalDataUnchecked marks an eval.data that could not be checked
// because the ledger did not answer: LaunchJob says Unavailable, not
// InvalidArgument.
var errEvalDataUnchecked = errors.New("the ledger did not answer")

// evalDataNotUpdate refuses an eval.data that names a blob the ledger knows
// as a trainer's update: an update goes only to those who need it, and an
// evaluation on it would publish what its bytes score.
func (s *Service) evalDataNotUpdate(ctx context.Context, job *Job) error {
	if !digest.Valid(job.Eval.Data) {
		return nil
	}
	author, err := s.updateAuthor(ctx, job.Eval.Data)
	switch {
	case err != nil:
		return fmt.Errorf("eval.data: cannot check blob %s against the ledger's updates: %w (%w)", job.Eval.Data, errEvalDataUnchecked, err)
	case author != nil:
		return fmt.Errorf("eval.data: blob %s is the update of trainer %s in job %s round %d; eval data must be a blob uploaded as such, not a trainer's update",
			job.Eval.Data, abbrev(author.Trainer), author.JobID, author.Round)
	}
	return nil
}

// evaluate scores task t's model, with the base model's files linked from
// the artifact store into a scratch folder.
func (s *Service) evaluate(ctx context.Context, t evalTask) (model.EvalResult, error) {
	// Checked again: the blob may have been submitted as an update since
	// the job was launched.
	if err := s.evalDataNotUpdate(ctx, t.job); err != nil {
		return model.EvalResult{}, err
	}
	dir, err := os.MkdirTemp(filepath.Join(s.cfg.Dir, "work"), "eval-")
	if err != nil {
		return model.EvalResult{}, err
	}
	defer os.RemoveAll(dir)
	link := func(digest, name string) error {
		p, err := s.cfg.Store.Path(digest)
		if err != nil {
			return err
		}
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s %s is not in the artifact store: %w", name, digest, err)
		}
		return os.Symlink(p, filepath.Join(dir, name))
	}
	if err := errors.Join(link(t.base, model.WeightsFile), link(t.files.config, model.ConfigFile)); err != nil {
		return model.EvalResult{}, fmt.Errorf("base model: %w", err)
	}
	if t.files.tokenizer != "" {
		if err := link(t.files.tokenizer, tokenizer.FileName); err != nil {
			return model.EvalResult{}, fmt.Errorf("base model: %w", err)
		}
	}
	if t.files.tokenizerConfig != "" {
		if err := link(t.files.tokenizerConfig, chat.ConfigFileName); err != nil {
			return model.EvalResult{}, fmt.Errorf("base model: %w", err)
		}
	}
	global, err := s.cfg.Store.Path(t.model)
	if err != nil {
		return model.EvalResult{}, fmt.Errorf("model %s: %w", t.model, err)
	}
	// The eval data is copied from where the job may name it into the
	// scratch folder, so nothing else is read by path.
	src, jsonl, err := s.openEvalData(t.job)
	if err != nil {
		return model.EvalResult{}, err
	}
	defer src.Close()
	data := filepath.Join(dir, "eval.txt")
	if jsonl {
		data = filepath.Join(dir, "eval.jsonl")
	}
	dst, err := os.Create(data)
	if err != nil {
		return model.EvalResult{}, err
	}
	_, err = io.Copy(dst, src)
	if err = errors.Join(err, dst.Close()); err != nil {
		return model.EvalResult{}, fmt.Errorf("eval.data: %w", err)
	}
	res, err := evaluateGlobal(ctx, dir, t.job, global, data)
	if err != nil {
		return res, err
	}
	s.recordEvaluation(ctx, t, dir, data, res)
	return res, nil
}

// evaluateGlobal scores a job's global model on the eval data file data
// (eval.File's rules), tokenized with the tokenizer of the base model
// folder baseDir: global is a LoRA job's adapter (safetensors), merged into
// the base model, or a full job's weights, read with the base model's
// config (eval.LoadGlobal). A mean NLL that is not finite is an error.
func evaluateGlobal(ctx context.Context, baseDir string, job *Job, global, data string) (model.EvalResult, error) {
	var lora *model.LoRAConfig
	if job.FineTune.Mode == model.ModeLoRA {
		l := job.FineTune.LoRA
		if l == nil {
			return model.EvalResult{}, fmt.Errorf("%w: job %s: finetune.lora is missing", ErrJob, job.Name)
		}
		lora = &model.LoRAConfig{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets}
	}
	m, err := eval.LoadGlobal(baseDir, global, lora)
	if err != nil {
		return model.EvalResult{}, err
	}
	res, err := eval.File(ctx, m, baseDir, data, nil)
	if err != nil {
		return model.EvalResult{}, fmt.Errorf("eval.data: %w", err)
	}
	if math.IsNaN(res.MeanNLL) || math.IsInf(res.MeanNLL, 0) {
		return res, fmt.Errorf("eval.data %s: the mean NLL is %v", data, res.MeanNLL)
	}
	return res, nil
}
