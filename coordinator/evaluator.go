package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/clock"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
)

// The held-out evaluation of a job's committed models (the job's eval
// section): when the service sees its RoundCommitted of round r committed
// and r is a multiple of eval.every or the job's last round, it scores the
// new global model on eval.data in the background, one evaluation at a
// time (package eval does the scoring). Results are kept by model digest,
// written through to evalsFile in the service's Dir (so a restarted
// coordinator still shows them), and shown in Status; a failed evaluation
// is logged and shown in the status detail, never failing the job.
//
// Each finished evaluation also goes on the ledger: the service scores,
// beside the new global, the model the round started from and that model
// with each contributor's update alone applied (scorer.go), and
// queues a RoundEvaluated with the round's loss and each contributor's
// score, unless the ledger already holds one for the round.

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
	init  string     // LoRA: the job's initial global adapter digest
	files modelFiles // the base model's config and tokenizer digests
}

// evaluator holds the evaluation queue, runs it one task at a time through
// run, and keeps the results (saved in dir). Safe for concurrent use; it
// calls run and done without holding its lock.
type evaluator struct {
	dir   string
	log   *slog.Logger
	clock clock.Clock
	run   func(context.Context, evalTask) (model.EvalResult, error)
	done  func(context.Context) // after each finished evaluation (Status changes)

	mu      sync.Mutex
	queue   []evalTask
	running *evalTask              // the evaluation under way
	active  bool                   // a worker goroutine is running
	results map[string]evalOutcome // model digest → outcome
	wg      sync.WaitGroup         // the running worker
}

// evalDue reports whether round r's committed model is to be evaluated.
func evalDue(job *Job, r uint64) bool {
	if job.Eval.Data == "" {
		return false
	}
	every := uint64(max(job.Eval.Every, 1))
	return r%every == 0 || r >= uint64(job.Rounds)
}

// add queues the evaluation of j's committed round r (model digest d) if
// it is due and not done, queued or running yet; the worker runs with ctx.
func (e *evaluator) add(ctx context.Context, j *runningJob, r uint64, d string) {
	if !evalDue(j.job, r) {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, done := e.results[d]; done {
		return
	}
	for _, t := range e.queue {
		if t.model == d {
			return
		}
	}
	if t := e.running; t != nil && t.model == d {
		return
	}
	e.queue = append(e.queue, evalTask{job: j.job, round: r, model: d, base: j.base, init: j.init, files: j.files})
	if !e.active {
		e.active = true
		e.wg.Add(1)
		go func() { defer e.wg.Done(); e.work(ctx) }()
	}
}

// addMissed queues, for a job resumed after a restart, the evaluations of
// its committed rounds that were due but never finished (the coordinator
// stopped first); finished ones were saved in evalsFile. A round saved as
// evaluated whose RoundEvaluated the ledger does not hold (the coordinator
// stopped before it committed) is evaluated again, so that it goes on
// the ledger.
func (e *evaluator) addMissed(ctx context.Context, j *runningJob, history []ledger.Round) {
	for _, r := range history {
		if r.Status != ledger.StatusCommitted || r.ModelDigest == "" {
			continue
		}
		if r.Evaluation == nil && evalDue(j.job, r.Round) {
			e.mu.Lock()
			delete(e.results, r.ModelDigest)
			e.mu.Unlock()
		}
		e.add(ctx, j, r.Round, r.ModelDigest)
	}
}

// wait waits for the worker to stop (after its ctx ended).
func (e *evaluator) wait() { e.wg.Wait() }

// work runs queued evaluations one at a time until the queue is empty or
// ctx ends.
func (e *evaluator) work(ctx context.Context) {
	for {
		e.mu.Lock()
		if len(e.queue) == 0 || ctx.Err() != nil {
			e.active = false
			e.queue = nil
			e.mu.Unlock()
			return
		}
		t := e.queue[0]
		e.queue = e.queue[1:]
		e.running = &t
		e.mu.Unlock()

		start := e.clock.Now()
		res, err := e.run(ctx, t)
		if ctx.Err() != nil {
			return
		}
		out := evalOutcome{job: t.job.Name, round: t.round, result: res, seconds: e.clock.Now().Sub(start).Seconds()}
		if err != nil {
			out.err = err.Error()
			e.log.ErrorContext(ctx, "evaluation failed", "job", t.job.Name, "round", t.round, "model", t.model, "err", err)
		} else {
			e.log.InfoContext(ctx, "evaluated", "job", t.job.Name, "round", t.round, "model", t.model,
				"nll", res.MeanNLL, "perplexity", res.Perplexity, "tokens", res.Tokens, "seconds", out.seconds)
		}
		e.mu.Lock()
		if e.results == nil {
			e.results = map[string]evalOutcome{}
		}
		e.results[t.model] = out
		e.running = nil
		err = e.saveLocked()
		e.mu.Unlock()
		if err != nil {
			e.log.WarnContext(ctx, "cannot save the evaluation results; they are kept in memory", "err", err)
		}
		if e.done != nil {
			e.done(ctx)
		}
	}
}

// pending returns the round whose evaluation of job is queued or running
// last, or 0.
func (e *evaluator) pending(job string) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var r uint64
	if t := e.running; t != nil && t.job.Name == job {
		r = t.round
	}
	for _, t := range e.queue {
		if t.job.Name == job {
			r = max(r, t.round)
		}
	}
	return r
}

// fill sets the rounds' evaluation results in a status and appends failed
// evaluations to its detail.
func (e *evaluator) fill(resp *coordinatorv1.StatusResponse) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range resp.Rounds {
		if r.ModelDigest == "" {
			continue
		}
		out, ok := e.results[r.ModelDigest]
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

// saveLocked writes every finished evaluation to evalsFile, sorted by job
// and round (e.mu held).
func (e *evaluator) saveLocked() error {
	recs := make([]evalRecord, 0, len(e.results))
	for d, o := range e.results {
		recs = append(recs, evalRecord{Model: d, Job: o.job, Round: o.round, Result: o.result, Err: o.err, Seconds: o.seconds})
	}
	slices.SortFunc(recs, func(a, b evalRecord) int {
		return cmp.Or(cmp.Compare(a.Job, b.Job), cmp.Compare(a.Round, b.Round), cmp.Compare(a.Model, b.Model))
	})
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(e.dir, evalsFile), append(data, '\n'), 0o644)
}

// load reads evalsFile, if any, into the results. A damaged file is an
// error that names it: the coordinator does not start on state it cannot
// read.
func (e *evaluator) load() error {
	path := filepath.Join(e.dir, evalsFile)
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
	e.mu.Lock()
	defer e.mu.Unlock()
	e.results = make(map[string]evalOutcome, len(recs))
	for i, r := range recs {
		if r.Model == "" || r.Job == "" {
			return fmt.Errorf("%s: record %d has no model or job (move it away to start without the saved evaluations)", path, i)
		}
		e.results[r.Model] = evalOutcome{job: r.Job, round: r.Round, result: r.Result, err: r.Err, seconds: r.Seconds}
	}
	return nil
}
