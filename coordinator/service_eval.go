package coordinator

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// The held-out evaluation of a job's committed models (the job's eval
// section): when the service sees its RoundCommitted of round r committed
// and r is a multiple of eval.every or the job's last round, it scores the
// new global model on eval.data in the background, one evaluation at a
// time. Results are kept by model digest, written through to evalsFile in
// the service's Dir (so a restarted coordinator still shows them), and
// shown in Status; a failed evaluation is logged and shown in the status
// detail, never failing the job.

// evalsFile, in ServiceConfig.Dir, holds every finished evaluation.
const evalsFile = "evals.json"

// evalRecord is one evaluation as evalsFile stores it.
type evalRecord struct {
	Model   string           `json:"model"`
	Job     string           `json:"job"`
	Round   uint64           `json:"round"`
	Result  model.EvalResult `json:"result"`
	Err     string           `json:"error,omitempty"`
	Seconds float64          `json:"seconds"`
}

// evalOutcome is one finished evaluation.
type evalOutcome struct {
	job     string
	round   uint64
	result  model.EvalResult
	err     string
	seconds float64
}

// evalTask is an evaluation waiting or running.
type evalTask struct {
	job   *Job
	round uint64
	model string     // the committed global's digest
	base  string     // the job's base model (full weights) digest
	files modelFiles // the base model's config and tokenizer digests
}

// evaluator holds the queue and the results (any goroutine).
type evaluator struct {
	mu      sync.Mutex
	queue   []evalTask
	running *evalTask              // the evaluation under way
	active  bool                   // a worker goroutine is running
	results map[string]evalOutcome // model digest → outcome
	wg      sync.WaitGroup         // the running worker, waited for by Run
}

// openEvalData opens a job's eval.data as the coordinator may read it,
// and says whether it is JSONL (else plain text). eval.data is either the
// digest of a blob in the artifact store (JSONL when its first non-space
// byte is '{') or a path relative to the configured eval data root that
// stays inside it: no absolute path, no "..", no symbolic link out of the
// root (os.Root enforces it as the file is opened). A job cannot make the
// coordinator read any other file. Errors name the field.
func (s *Service) openEvalData(job *Job) (*os.File, bool, error) {
	p := job.Eval.Data
	if isDigest(p) {
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
	return f, strings.HasSuffix(p, ".jsonl") || strings.HasSuffix(p, ".ndjson"), nil
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
	if !isDigest(job.Eval.Data) {
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

// evalDue reports whether round r's committed model is to be evaluated.
func evalDue(job *Job, r uint64) bool {
	if job.Eval.Data == "" {
		return false
	}
	every := uint64(max(job.Eval.Every, 1))
	return r%every == 0 || r >= uint64(job.Rounds)
}

// postEval queues the evaluation of a committed round's model, if due
// (called by the tx worker once RoundCommitted is on the ledger).
func (s *Service) postEval(ctx context.Context, gen uint64, rc ledger.RoundCommitted) {
	s.post(ctx, func() {
		if j := s.job; j != nil && gen == s.gen.Load() && j.job.Name == rc.JobID {
			s.queueEval(j, rc.Round, rc.ModelDigest)
		}
	})
}

// queueEval queues the evaluation of the running job's committed round r
// (model digest d) if it is due and not done yet (event loop).
func (s *Service) queueEval(j *runningJob, r uint64, d string) {
	if !evalDue(j.job, r) {
		return
	}
	s.ev.mu.Lock()
	defer s.ev.mu.Unlock()
	if _, done := s.ev.results[d]; done {
		return
	}
	for _, t := range s.ev.queue {
		if t.model == d {
			return
		}
	}
	if t := s.ev.running; t != nil && t.model == d {
		return
	}
	s.ev.queue = append(s.ev.queue, evalTask{job: j.job, round: r, model: d, base: j.base, files: j.files})
	if !s.ev.active {
		s.ev.active = true
		s.ev.wg.Add(1)
		go func() { defer s.ev.wg.Done(); s.evalWorker(s.runCtx) }()
	}
}

// queueMissedEvals queues, for a job resumed after a restart, the
// evaluations of its committed rounds that were due but never finished
// (the coordinator stopped first); finished ones were saved in evalsFile.
func (s *Service) queueMissedEvals(j *runningJob, history []ledger.Round) {
	for _, r := range history {
		if r.Status == ledger.StatusCommitted && r.ModelDigest != "" {
			s.queueEval(j, r.Round, r.ModelDigest)
		}
	}
}

// evalWorker runs queued evaluations one at a time until the queue is
// empty or ctx ends.
func (s *Service) evalWorker(ctx context.Context) {
	for {
		s.ev.mu.Lock()
		if len(s.ev.queue) == 0 || ctx.Err() != nil {
			s.ev.active = false
			s.ev.queue = nil
			s.ev.mu.Unlock()
			return
		}
		t := s.ev.queue[0]
		s.ev.queue = s.ev.queue[1:]
		s.ev.running = &t
		s.ev.mu.Unlock()

		start := time.Now()
		res, err := s.evaluate(ctx, t)
		if ctx.Err() != nil {
			return
		}
		out := evalOutcome{job: t.job.Name, round: t.round, result: res, seconds: time.Since(start).Seconds()}
		if err != nil {
			out.err = err.Error()
			s.log.ErrorContext(ctx, "evaluation failed", "job", t.job.Name, "round", t.round, "model", t.model, "err", err)
		} else {
			s.log.InfoContext(ctx, "evaluated", "job", t.job.Name, "round", t.round, "model", t.model,
				"nll", res.MeanNLL, "perplexity", res.Perplexity, "tokens", res.Tokens, "seconds", out.seconds)
		}
		s.ev.mu.Lock()
		if s.ev.results == nil {
			s.ev.results = map[string]evalOutcome{}
		}
		s.ev.results[t.model] = out
		s.ev.running = nil
		err = s.saveEvalsLocked()
		s.ev.mu.Unlock()
		if err != nil {
			s.log.WarnContext(ctx, "cannot save the evaluation results; they are kept in memory", "err", err)
		}
		s.post(ctx, func() { s.publishStatus(ctx) })
	}
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
	return evaluateGlobal(ctx, dir, t.job, global, data)
}

// evaluateGlobal scores a job's global model on the eval data file data
// (JSONL records or plain text), tokenized with the tokenizer of the base
// model folder baseDir: global is a LoRA job's adapter (safetensors),
// merged into the base model, or a full job's weights, read with the base
// model's config.
func evaluateGlobal(ctx context.Context, baseDir string, job *Job, global, data string) (model.EvalResult, error) {
	var m *model.Model
	switch job.FineTune.Mode {
	case model.ModeLoRA:
		l := job.FineTune.LoRA
		if l == nil {
			return model.EvalResult{}, fmt.Errorf("%w: job %s: finetune.lora is missing", ErrJob, job.Name)
		}
		ad, err := model.ReadAdapterFile(global, model.LoRAConfig{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets})
		if err != nil {
			return model.EvalResult{}, fmt.Errorf("global adapter: %w", err)
		}
		base, err := model.Load(baseDir)
		if err != nil {
			return model.EvalResult{}, fmt.Errorf("base model: %w", err)
		}
		if m, err = base.Merge(ad); err != nil {
			return model.EvalResult{}, fmt.Errorf("global adapter: %w", err)
		}
	default:
		dir, err := os.MkdirTemp("", "fedtune-eval-full-")
		if err != nil {
			return model.EvalResult{}, err
		}
		defer os.RemoveAll(dir)
		cfg, err := filepath.Abs(filepath.Join(baseDir, model.ConfigFile))
		if err != nil {
			return model.EvalResult{}, err
		}
		if global, err = filepath.Abs(global); err != nil {
			return model.EvalResult{}, err
		}
		if err := errors.Join(os.Symlink(cfg, filepath.Join(dir, model.ConfigFile)),
			os.Symlink(global, filepath.Join(dir, model.WeightsFile))); err != nil {
			return model.EvalResult{}, err
		}
		if m, err = model.Load(dir); err != nil {
			return model.EvalResult{}, fmt.Errorf("global weights: %w", err)
		}
	}
	tok, err := tokenizer.Load(baseDir, m.Config.VocabSize)
	if err != nil {
		return model.EvalResult{}, err
	}
	if ds, _, err := instruct.ReadDataset(data); err == nil {
		res, err := evaluateInstruct(ctx, baseDir, m, tok, ds)
		if err != nil {
			return model.EvalResult{}, fmt.Errorf("eval.data %s: %w", data, err)
		}
		return res, nil
	}
	var tokens []int
	if filepath.Ext(data) == ".jsonl" {
		ds, err := datasets.Load(data, datasets.Options{})
		if err != nil {
			return model.EvalResult{}, fmt.Errorf("eval.data: %w", err)
		}
		tokens = datasets.Tokenize(ds, tok)
	} else {
		b, err := os.ReadFile(data)
		if err != nil {
			return model.EvalResult{}, fmt.Errorf("eval.data: %w", err)
		}
		tokens = tok.Encode(string(b))
	}
	res, err := engine.Evaluate(ctx, engine.NewHost(), m, tokens, nil)
	if err != nil {
		return model.EvalResult{}, fmt.Errorf("eval.data %s: %w", data, err)
	}
	if math.IsNaN(res.MeanNLL) || math.IsInf(res.MeanNLL, 0) {
		return res, fmt.Errorf("eval.data %s: the mean NLL is %v", data, res.MeanNLL)
	}
	return res, nil
}

// evalPending returns the round whose evaluation of job is queued or
// running last, or 0.
func (s *Service) evalPending(job string) uint64 {
	s.ev.mu.Lock()
	defer s.ev.mu.Unlock()
	var r uint64
	if t := s.ev.running; t != nil && t.job.Name == job {
		r = t.round
	}
	for _, t := range s.ev.queue {
		if t.job.Name == job {
			r = max(r, t.round)
		}
	}
	return r
}

// fillEval sets the rounds' evaluation results in a status and appends
// failed evaluations to its detail.
func (s *Service) fillEval(resp *coordinatorv1.StatusResponse) {
	s.ev.mu.Lock()
	defer s.ev.mu.Unlock()
	for _, r := range resp.Rounds {
		if r.ModelDigest == "" {
			continue
		}
		out, ok := s.ev.results[r.ModelDigest]
		if !ok || out.job != resp.JobId {
			continue
		}
		if out.err != "" {
			msg := fmt.Sprintf("round %d eval: %s", r.Round, out.err)
			if resp.Detail != "" {
				msg = resp.Detail + "; " + msg
			}
			resp.Detail = msg
			continue
		}
		r.Evaluated, r.EvalNll, r.EvalPerplexity = true, out.result.MeanNLL, out.result.Perplexity
	}
}

// saveEvalsLocked writes every finished evaluation to evalsFile, sorted by
// job and round (s.ev.mu held).
func (s *Service) saveEvalsLocked() error {
	recs := make([]evalRecord, 0, len(s.ev.results))
	for d, o := range s.ev.results {
		recs = append(recs, evalRecord{Model: d, Job: o.job, Round: o.round, Result: o.result, Err: o.err, Seconds: o.seconds})
	}
	slices.SortFunc(recs, func(a, b evalRecord) int {
		return cmp.Or(cmp.Compare(a.Job, b.Job), cmp.Compare(a.Round, b.Round), cmp.Compare(a.Model, b.Model))
	})
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.cfg.Dir, evalsFile), append(data, '\n'))
}

// loadEvals reads evalsFile, if any, into s.ev.results (NewService). A
// damaged file is an error that names it: the coordinator does not start
// on state it cannot read.
func (s *Service) loadEvals() error {
	path := filepath.Join(s.cfg.Dir, evalsFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var recs []evalRecord
	if err := json.Unmarshal(data, &recs); err != nil {
		return fmt.Errorf("%s: %w (move it away to start without the saved evaluations)", path, err)
	}
	s.ev.results = make(map[string]evalOutcome, len(recs))
	for i, r := range recs {
		if r.Model == "" || r.Job == "" {
			return fmt.Errorf("%s: record %d has no model or job (move it away to start without the saved evaluations)", path, i)
		}
		s.ev.results[r.Model] = evalOutcome{job: r.Job, round: r.Round, result: r.Result, err: r.Err, seconds: r.Seconds}
	}
	return nil
}
