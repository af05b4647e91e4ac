package round

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Local aggregates over an artifact store in this process and signs with
// its own Signer: the aggregator role that both the coordinator (when it
// holds the aggregator key) and the aggregator node run.
type Local struct {
	// Backend computes the numerics (nil: kernels.Default(), the CPU).
	// Every backend gives the same bits, so the choice never changes a
	// committed digest.
	Backend kernels.Backend

	// Fetch brings blob digest into the store (nil: the blob must be in
	// the store already, as in the coordinator's own process). An update
	// that Fetch cannot bring after FetchAttempts tries is rejected.
	Fetch func(ctx context.Context, digest string) error

	store  *artifact.Store
	dir    string
	signer *client.Signer
	log    *slog.Logger
	own    Own
}

// NewLocal returns an aggregator over store that keeps scratch files under
// dir and signs through signer, whose ledger client it also reads (a
// signer without one: no ledger checks, and no RoundFailed on a passed
// deadline); log may be nil.
func NewLocal(store *artifact.Store, dir string, signer *client.Signer, log *slog.Logger) *Local {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Local{store: store, dir: dir, signer: signer, log: log}
}

// ID returns the aggregator's ledger key ID.
func (l *Local) ID() string { return l.signer.ID() }

// Submit signs body and submits it to the ledger. It signs only what this
// aggregator derived itself (Own.Vet): an UpdateRejected of an update its
// aggregation rejected or could not fetch, a RoundFailed of a round whose
// aggregation failed here or whose deadline the ledger shows passed with
// too few usable updates, and a RoundCommitted of the model and
// contributors its aggregation produced. Anything else is refused with an
// error wrapping client.ErrRejected and ErrNotOwn.
func (l *Local) Submit(ctx context.Context, body ledger.TxBody) (uint64, error) {
	own, err := l.own.Vet(ctx, l.signer.Client(), body, l.fetch)
	if err == nil {
		if rc, ok := body.(ledger.RoundCommitted); ok {
			err = l.own.vetCommit(rc)
		}
	}
	if err != nil {
		return 0, refusal{fmt.Errorf("%s: aggregator %s refuses to sign: %w", body.TxType(), abbrev(l.ID()), err)}
	}
	return l.signer.Submit(ctx, own)
}

// refusal is an aggregator's refusal to sign: a rejection (client.ErrRejected)
// that no ledger node made.
type refusal struct{ err error }

func (r refusal) Error() string   { return r.err.Error() }
func (r refusal) Unwrap() []error { return []error{r.err, client.ErrRejected} }

// fetch brings digest into the store (Fetch), or checks it is there.
func (l *Local) fetch(ctx context.Context, digest string) error {
	if l.Fetch != nil {
		return l.Fetch(ctx, digest)
	}
	ok, err := l.store.Has(digest)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("blob %s is not in the store", digest)
	}
	return nil
}

// Aggregate combines the task's inputs over the reference weights global
// ("" for none): it fetches the inputs, the reference global and the
// server state, runs aggregator.Aggregate over the stored updates and
// stores the new global (and server state). It rejects itself, and
// returns in Rejected (keyed by trainer) every update of the round on the
// ledger that is not an input, not rejected and not in the artifact store
// after FetchAttempts tries; it records its own rejections and failures
// for Submit.
func (l *Local) Aggregate(ctx context.Context, a Task, global string) (Result, error) {
	done, err := l.aggregate(ctx, &a, global)
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrRefused) {
		l.own.Fail(a.JobID, a.Round, err.Error())
	}
	return done, err
}

// ErrRefused is wrapped when an aggregator refuses a request (such as one
// that leaves out a delivered update of the round): no failure of the
// aggregation, so Submit signs no RoundFailed for it.
var ErrRefused = errors.New("aggregation refused")

func (l *Local) aggregate(ctx context.Context, a *Task, global string) (Result, error) {
	rejected := map[string]string{}
	// Inputs this aggregator cannot fetch are rejected, not fatal: the
	// ledger records them as submitted, and only their trainer can be to
	// blame.
	kept := a.Inputs[:0:0]
	for _, in := range a.Inputs {
		if err := FetchWithRetry(ctx, in.Digest, l.fetch); err != nil {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			why := fmt.Sprintf("update %s of trainer %s is %v", in.Digest, in.Trainer, err)
			l.own.Reject(a.JobID, a.Round, in.Digest, why)
			rejected[in.Trainer] = ledger.TruncateReason(why)
			continue
		}
		kept = append(kept, in)
	}
	a.Inputs = kept
	minTrainers := 0
	if lc := l.signer.Client(); lc != nil {
		if rec, err := lc.Job(ctx, a.JobID); err == nil {
			minTrainers = rec.Recipe.MinTrainers
			if err := l.checkDatasets(ctx, lc, a, &rec.Recipe, rejected); err != nil {
				return Result{}, err
			}
		}
		others, err := undelivered(ctx, lc, *a)
		if err != nil {
			return Result{}, err
		}
		for _, u := range others {
			if _, ok := rejected[u.Trainer]; ok {
				continue
			}
			err := FetchWithRetry(ctx, u.UpdateDigest, l.fetch)
			if err == nil {
				return Result{}, fmt.Errorf("%w: update %s of trainer %s is submitted on the ledger, not rejected and in the artifact store, yet not an input of the aggregation of job %s round %d",
					ErrRefused, u.UpdateDigest, u.Trainer, a.JobID, a.Round)
			}
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			why := fmt.Sprintf("update %s of trainer %s was submitted on the ledger but is %v", u.UpdateDigest, u.Trainer, err)
			l.own.Reject(a.JobID, a.Round, u.UpdateDigest, why)
			rejected[u.Trainer] = ledger.TruncateReason(why)
		}
	}
	if len(a.Inputs) == 0 && len(rejected) > 0 {
		whys := make([]string, 0, len(rejected))
		for _, t := range slices.Sorted(maps.Keys(rejected)) {
			whys = append(whys, rejected[t])
		}
		return Result{}, fmt.Errorf("no update of job %s round %d passed the aggregator's checks: %s", a.JobID, a.Round, strings.Join(whys, "; "))
	}
	for _, d := range []string{global, a.State} {
		if d == "" {
			continue
		}
		if err := FetchWithRetry(ctx, d, l.fetch); err != nil {
			return Result{}, fmt.Errorf("blob %s: %w", d, err)
		}
	}
	req, err := a.Request(l.store.Path, global)
	if err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return Result{}, err
	}
	work, err := os.MkdirTemp(l.dir, fmt.Sprintf("agg-r%d-", a.Round))
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(work)
	req.Out = filepath.Join(work, "global.safetensors")
	if so, ok := req.Strategy.(aggregator.ServerOptimizer); ok && so.Optimizes() && len(so.StateSlots()) > 0 {
		req.StateOut = filepath.Join(work, "state.safetensors")
	}
	req.Logger = l.log.With("job", a.JobID, "round", a.Round)
	req.Backend = l.Backend
	res, err := aggregator.Aggregate(ctx, req)
	if err != nil {
		return Result{}, err
	}
	d, err := l.putFile(ctx, res.Path, res.Digest)
	if err != nil {
		return Result{}, err
	}
	done := Result{Round: a.Round, Model: d, Weights: map[string]float64{}, Rejected: map[string]string{}}
	if req.StateOut != "" {
		if done.State, err = l.putFile(ctx, res.StatePath, res.StateDigest); err != nil {
			return Result{}, err
		}
	}
	for _, c := range res.Accepted {
		done.Weights[c.ContributorID] = res.Weights[c.Key()]
	}
	for _, r := range res.Rejected {
		// Name the update by digest, not by this node's file path.
		why := r.Reason()
		if r.Path != "" {
			why = strings.ReplaceAll(why, r.Path, "update "+a.inputDigest(r.ContributorID))
		}
		done.Rejected[r.ContributorID] = ledger.TruncateReason(why)
		l.own.Reject(a.JobID, a.Round, a.inputDigest(r.ContributorID), why)
	}
	for t, why := range rejected {
		done.Rejected[t] = why
	}
	l.own.produced(a.JobID, a.Round, done)
	if n := len(done.Weights); n < minTrainers {
		l.own.Fail(a.JobID, a.Round, fmt.Sprintf("only %d updates passed the aggregator's checks; need %d", n, minTrainers))
	}
	return done, nil
}

func (l *Local) putFile(ctx context.Context, path, want string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := l.store.PutExpect(ctx, want, f); err != nil {
		return "", fmt.Errorf("store %s: %w", path, err)
	}
	return want, nil
}

// checkDatasets rejects every input computed on a dataset, its trainer's
// own or a published one its ranges (UpdateSubmitted.Ranges) mixed in,
// that lacks an attestation the job's recipe requires (a passing
// DatasetAttested of the kind, by the named auditor or any auditor, as the
// ledger holds it now) or is under a licence the recipe does not accept:
// the ledger would refuse a commit that counts it. Rejections, naming the
// dataset, go into rejected (by trainer) and this aggregator's own record.
func (l *Local) checkDatasets(ctx context.Context, lc *client.Client, a *Task, rc *ledger.RoundRecipe, rejected map[string]string) error {
	if len(rc.RequireAttestations) == 0 && len(rc.Licences) == 0 {
		return nil
	}
	ranges := map[string][]ledger.SampleRange{} // by trainer, from the ledger
	if len(rc.Published) > 0 {
		r, err := lc.Round(ctx, a.JobID, a.Round)
		if err != nil {
			return fmt.Errorf("round %d on the ledger: %w", a.Round, err)
		}
		for _, u := range r.Updates {
			ranges[u.Trainer] = u.Ranges
		}
	}
	seen := map[string]*ledger.Dataset{}
	kept := a.Inputs[:0:0]
	for _, in := range a.Inputs {
		why := ""
		for _, d := range append([]string{in.Dataset}, ledger.RangeDatasets(in.Dataset, ranges[in.Trainer])...) {
			ds := seen[d]
			if ds == nil {
				var err error
				if ds, err = lc.Dataset(ctx, d); err != nil {
					return fmt.Errorf("attestations of dataset %s of trainer %s: %w", d, in.Trainer, err)
				}
				seen[d] = ds
			}
			if missing := ledger.MissingAttestations(rc.RequireAttestations, ds.Attestations); len(missing) > 0 {
				why = ledger.AttestationRefusal(in.Digest, in.Trainer, d, a.JobID, missing)
				break
			}
			if !rc.AcceptsLicence(ds.Licence) {
				why = rc.LicenceRefusal(d, ds.Name, ds.Licence)
				break
			}
		}
		if why != "" {
			l.own.Reject(a.JobID, a.Round, in.Digest, why)
			rejected[in.Trainer] = ledger.TruncateReason(why)
			continue
		}
		kept = append(kept, in)
	}
	a.Inputs = kept
	return nil
}
