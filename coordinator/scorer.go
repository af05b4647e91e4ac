package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
)

// roundReader is what the scorer needs of the ledger: a round's record.
type roundReader interface {
	Round(ctx context.Context, job string, n, minHeight uint64) (*ledger.Round, error)
}

// scorer scores models on a job's held-out eval data: it runs one
// evaluation of a committed model (evaluate, evaldata.go), reading the
// eval data only as the job may name it (openData, checkData), and turns
// it into the RoundEvaluated the coordinator records: it reads the round
// from the ledger (its starting model and contributors) and scores each
// contributor's update alone on the eval data, reading models and updates
// from the artifact store. It holds no state: the evaluator's worker and
// LaunchJob call it, never under the driver's lock.
type scorer struct {
	store    *artifact.Store
	rounds   roundReader
	work     string // scratch folders are made here
	dataRoot string // ServiceConfig.EvalDataRoot
	// author returns the first submitter of the update of digest d, or
	// nil when d is no update (artifactGuard.updateAuthor, cached).
	author func(ctx context.Context, d string) (*ledger.UpdateSubmission, error)
	log    *slog.Logger
}

// evaluation returns the RoundEvaluated to record for t's finished
// evaluation res (the round's model scored on data, with the base model's
// files in baseDir), its contributors scored (contributors), or nil when
// there is nothing to record: the ledger already holds the round's
// evaluation (a restarted coordinator), the round is not the committed
// model t scored, or the evaluation scored no tokens. Problems are
// logged: the evaluation in Status stands without them.
func (c *scorer) evaluation(ctx context.Context, t evalTask, baseDir, data string, res model.EvalResult) *ledger.RoundEvaluated {
	log := c.log.With("job", t.job.Name, "round", t.round)
	if res.Tokens <= 0 {
		log.WarnContext(ctx, "evaluation scored no tokens; not recorded on the ledger")
		return nil
	}
	r, err := c.rounds.Round(ctx, t.job.Name, t.round, 0)
	if err != nil {
		log.WarnContext(ctx, "cannot read the round to record its evaluation", "err", err)
		return nil
	}
	if r.Status != ledger.StatusCommitted || r.ModelDigest != t.model {
		log.WarnContext(ctx, "round is not the committed model evaluated; not recorded", "status", r.Status, "model", r.ModelDigest)
		return nil
	}
	if r.Evaluation != nil {
		return nil
	}
	evalDigest := t.job.Eval.Data
	if !digest.Valid(evalDigest) {
		if evalDigest, err = digest.File(data); err != nil {
			log.WarnContext(ctx, "cannot digest the eval data", "err", err)
			return nil
		}
	}
	scores, err := c.contributors(ctx, t, baseDir, data, r)
	if err != nil {
		log.WarnContext(ctx, "cannot score the round's contributors; recording the loss without scores", "err", err)
	}
	return &ledger.RoundEvaluated{JobID: t.job.Name, Round: t.round, ModelDigest: t.model, EvalDigest: evalDigest,
		MeanNLL: res.MeanNLL, Tokens: uint64(res.Tokens), Scores: scores}
}

// contributors returns, for each contributor of committed round r
// (in the round's order), the loss its update alone removes on the eval
// data: the mean NLL of the round's starting global minus that of the
// starting global with only that update applied, as FedAvg of the one
// update over the starting global makes it (a LoRA job: the contributor's
// adapter, merged into the base model; a full job: the start plus its
// delta, or its full weights). Both are scored by evaluateGlobal, the code
// that scores the round's model. A contributor whose update is not in the
// artifact store is left out, and logged.
func (c *scorer) contributors(ctx context.Context, t evalTask, baseDir, data string, r *ledger.Round) ([]ledger.ContributionScore, error) {
	start := r.BaseModel
	if t.job.FineTune.Mode == model.ModeLoRA && start == t.base {
		start = t.init
	}
	startPath, err := c.store.Path(start)
	if err != nil {
		return nil, fmt.Errorf("starting model %s: %w", start, err)
	}
	if _, err := os.Stat(startPath); err != nil {
		return nil, fmt.Errorf("starting model %s is not in the artifact store: %w", start, err)
	}
	startRes, err := evaluateGlobal(ctx, baseDir, t.job, startPath, data)
	if err != nil {
		return nil, fmt.Errorf("starting model %s: %w", start, err)
	}
	var scores []ledger.ContributionScore
	for i, ct := range r.Contributors {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		loss, err := c.aloneLoss(ctx, t, baseDir, data, startPath, ct.UpdateDigest, i)
		if err != nil {
			c.log.WarnContext(ctx, "contributor not scored", "job", t.job.Name, "round", t.round, "trainer", abbrev(ct.Trainer), "err", err)
			continue
		}
		scores = append(scores, ledger.ContributionScore{Trainer: ct.Trainer, LossRemoved: startRes.MeanNLL - loss})
	}
	return scores, nil
}

// aloneLoss scores the starting global (startPath) with one update
// (digest upd) alone applied.
func (c *scorer) aloneLoss(ctx context.Context, t evalTask, baseDir, data, startPath, upd string, i int) (float64, error) {
	p, err := c.store.Path(upd)
	if err != nil {
		return 0, err
	}
	if _, err := os.Stat(p); err != nil {
		return 0, fmt.Errorf("update %s is not in the artifact store: %w", upd, err)
	}
	out := filepath.Join(baseDir, fmt.Sprintf("alone-%d.safetensors", i))
	defer os.Remove(out)
	if _, err := aggregator.Aggregate(ctx, aggregator.Request{Strategy: &aggregator.FedAvg{}, Base: startPath, Out: out,
		Inputs: []aggregator.Input{{Path: p, Weight: 1}}, Options: aggregator.Options{Strict: true, Threads: 1}}); err != nil {
		return 0, fmt.Errorf("update %s over the starting model: %w", upd, err)
	}
	res, err := evaluateGlobal(ctx, baseDir, t.job, out, data)
	if err != nil {
		return 0, fmt.Errorf("update %s: %w", upd, err)
	}
	return res.MeanNLL, nil
}
