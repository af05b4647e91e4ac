package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fedtune/fedtune/aggregator/round"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
)

// runningJob is the job the service drives (guarded by Service.mu).
type runningJob struct {
	job    *Job
	m      *Machine
	base   string // round 1's base model (full weights)
	files  modelFiles
	init   string // LoRA: the job's initial global adapter digest
	detail string
	result *JobResult
	// launcher is the TLS key that launched the job ("": plain text); it
	// may cancel the job.
	launcher string
	// ended, when set (by CancelJob), is closed once the job has a result.
	ended chan struct{}
	// height is the highest height a tx of the job committed at that the
	// service saw: reads that must follow it are made at least there.
	height uint64
}

// global returns the digest of the weights trainers start from and the
// aggregation takes as reference when the machine's base is base: the
// initial adapter of a LoRA job while base is still the foundation model.
func (j *runningJob) global(base string) string {
	if j.job.FineTune.Mode == model.ModeLoRA && base == j.base {
		return j.init
	}
	return base
}

// taskProto turns a TrainTask into its wire form.
func (j *runningJob) taskProto(t TrainTask) (*coordinatorv1.Task, error) {
	tp := &coordinatorv1.Task{
		JobId: t.JobID, Round: t.Round, ConfigDigest: t.ConfigDigest,
		BaseModel: j.base, BaseConfig: j.files.config, Tokenizer: j.files.tokenizer, TokenizerConfig: j.files.tokenizerConfig,
		Global: j.global(t.BaseModel), DeadlineUnixNano: t.Deadline.UnixNano(), Seed: t.Seed,
		AdapterSeed: AdapterSeed(j.job.Seed), Datasets: t.Datasets,
		LocalSteps: int32(t.Train.LocalSteps), Batch: int32(t.Train.Batch), SeqLen: int32(t.Train.SeqLen),
		Lr: t.Train.LR, WeightDecay: t.Train.WeightDecay, ClipNorm: t.Train.ClipNorm, Warmup: int32(t.Train.Warmup),
		Schedule: t.Train.Schedule, Mode: t.FineTune.Mode, Compression: t.Compression.Kind,
		Int8Block: int32(j.job.Int8Block()),
	}
	if l := t.FineTune.LoRA; l != nil {
		tp.Lora = &coordinatorv1.LoRA{Rank: int32(l.Rank), Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets}
	}
	if tp.Global == "" {
		return nil, errors.New("no global weights for the task")
	}
	return tp, nil
}

// aggregate runs a round's aggregation through the Aggregator (in-process
// or remote), which leaves the new global (and server state) in the store,
// and reports to the machine.
func (s *Service) aggregate(ctx context.Context, gen uint64, j *runningJob, a round.Task) {
	report := func(ev Event) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if gen == s.gen {
			s.step(ev)
		}
	}
	var res round.Result
	var err error
	var since time.Time
	for delay := txRetryMin; ; delay = min(2*delay, txRetryMax) {
		res, err = s.agg.Aggregate(ctx, a, j.global(a.Base))
		if err == nil || !errors.Is(err, ErrAggregatorUnavailable) || ctx.Err() != nil {
			break
		}
		// The aggregator is unreachable: nothing was aggregated, so there
		// is no failure it could sign. Try again.
		if since.IsZero() {
			since = s.clock.Now()
		}
		detail := fmt.Sprintf("round %d: aggregation not run since %s (retrying every %s): %v", a.Round, since.UTC().Format(time.RFC3339), delay, err)
		s.log.WarnContext(ctx, "aggregator unreachable; retrying", "job", a.JobID, "round", a.Round, "retry_in", delay, "err", err)
		s.mu.Lock()
		if j := s.job; j != nil && gen == s.gen && j.result == nil {
			j.detail = detail
			s.publishStatus()
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(delay):
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.log.ErrorContext(ctx, "aggregation failed", "job", a.JobID, "round", a.Round, "err", err)
		report(AggregationFailed{Round: a.Round, Reason: ledger.TruncateReason(err.Error())})
		return
	}
	done := AggregationDone(res)
	if err := s.rejectUndelivered(ctx, gen, a, &done); err != nil {
		if ctx.Err() != nil {
			return
		}
		s.log.ErrorContext(ctx, "aggregation failed", "job", a.JobID, "round", a.Round, "err", err)
		report(AggregationFailed{Round: a.Round, Reason: ledger.TruncateReason(err.Error())})
		return
	}
	s.log.InfoContext(ctx, "aggregated", "job", a.JobID, "round", a.Round, "model", done.Model, "aggregator", abbrev(s.agg.ID()),
		"accepted", len(done.Weights), "rejected", len(done.Rejected))
	report(done)
}

// rejectUndelivered queues the aggregator's own rejections of updates
// that are not inputs of the aggregation (done.Rejected keyed by a trainer
// that is no input: an update the ledger records for the round that the
// aggregator could not fetch from the artifact store), ahead of the
// round's closing tx: the ledger accepts a commit only if it accounts for
// every submitted update, as a contributor or by an UpdateRejected. It
// removes them from done.Rejected (the machine knows only its inputs).
func (s *Service) rejectUndelivered(ctx context.Context, gen uint64, a round.Task, done *AggregationDone) error {
	var others []string
	for t := range done.Rejected {
		if !slices.ContainsFunc(a.Inputs, func(in round.Input) bool { return in.Trainer == t }) {
			others = append(others, t)
		}
	}
	if len(others) == 0 {
		return nil
	}
	if s.cfg.Ledger == nil {
		return fmt.Errorf("the aggregator rejected updates of trainers %v that are not inputs, and there is no ledger to name them", others)
	}
	r, err := s.cfg.Ledger.Round(ctx, a.JobID, a.Round, 0)
	if err != nil {
		return fmt.Errorf("round %d on the ledger: %w", a.Round, err)
	}
	slices.Sort(others)
	for _, t := range others {
		i := slices.IndexFunc(r.Updates, func(u ledger.Update) bool { return u.Trainer == t })
		if i < 0 {
			return fmt.Errorf("the aggregator rejected an update of trainer %s, which has none in round %d on the ledger", abbrev(t), a.Round)
		}
		u := r.Updates[i]
		s.txq.push(gen, ledger.UpdateRejected{JobID: a.JobID, Round: a.Round, UpdateDigest: u.UpdateDigest, Reason: done.Rejected[t]})
		s.log.WarnContext(ctx, "undelivered update rejected by the aggregator", "job", a.JobID, "round", a.Round, "trainer", abbrev(t), "update", u.UpdateDigest, "why", done.Rejected[t])
		delete(done.Rejected, t)
	}
	return nil
}
