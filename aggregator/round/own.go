package round

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// ErrNotOwn is wrapped when an aggregator refuses to sign an aggregator-role
// transaction it did not derive itself: an UpdateRejected of an update it
// neither rejected nor failed to fetch, or a RoundFailed of a round whose
// aggregation did not fail and whose deadline has not passed with too few
// usable updates.
var ErrNotOwn = errors.New("not derived by this aggregator")

// FetchAttempts is how often an aggregator tries to fetch an update from
// the artifact store before it rejects the update as not delivered.
const FetchAttempts = 3

// fetchBackoff is the wait before the second fetch attempt (doubled each
// time after).
var fetchBackoff = 250 * time.Millisecond

// Own records, per round, what an aggregator observed itself while it
// aggregated: the updates it rejected (its input checks, or not in the
// artifact store after FetchAttempts tries) and the failure of its own
// aggregation. An aggregator signs an UpdateRejected or a RoundFailed only
// from this record (Vet), never on another party's word. It is safe for
// concurrent use; the zero value is ready.
type Own struct {
	mu     sync.Mutex
	rounds map[ownKey]*ownRound
}

type ownKey struct {
	job   string
	round uint64
}

type ownRound struct {
	rejected map[string]string // update digest -> reason
	failed   string            // the aggregation's own failure ("" none)
	model    string            // the model its aggregation produced
	weights  map[string]float64
}

func (o *Own) get(job string, round uint64) *ownRound {
	if o.rounds == nil {
		o.rounds = map[ownKey]*ownRound{}
	}
	k := ownKey{job, round}
	r := o.rounds[k]
	if r == nil {
		r = &ownRound{rejected: map[string]string{}}
		o.rounds[k] = r
		// Keep the record bounded: rounds of a job far behind are done.
		for old := range o.rounds {
			if old.job == job && old.round+16 < round {
				delete(o.rounds, old)
			}
		}
	}
	return r
}

// Reject records that this aggregator rejected update digest of the round
// for reason.
func (o *Own) Reject(job string, round uint64, digest, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.get(job, round).rejected[digest] = ledger.TruncateReason(reason)
}

// Fail records that this aggregator's own aggregation of the round failed.
func (o *Own) Fail(job string, round uint64, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.get(job, round).failed = ledger.TruncateReason("aggregation failed: " + reason)
}

// produced records the model and weights of the round's aggregation.
func (o *Own) produced(job string, round uint64, done Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.get(job, round)
	r.model, r.weights = done.Model, maps.Clone(done.Weights)
}

// vetCommit refuses a RoundCommitted whose model or contributors are not
// those this aggregator's aggregation of the round produced.
func (o *Own) vetCommit(b ledger.RoundCommitted) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.rounds[ownKey{b.JobID, b.Round}]
	if r == nil || r.model == "" {
		return fmt.Errorf("%w: RoundCommitted of job %s round %d names model %s, but this aggregator did not aggregate the round", ErrNotOwn, b.JobID, b.Round, b.ModelDigest)
	}
	if b.ModelDigest != r.model {
		return fmt.Errorf("%w: RoundCommitted of job %s round %d names model %s, this aggregator produced %s", ErrNotOwn, b.JobID, b.Round, b.ModelDigest, r.model)
	}
	got := map[string]float64{}
	for _, c := range b.Contributors {
		got[c.Trainer] = c.Weight
	}
	if !maps.Equal(got, r.weights) {
		return fmt.Errorf("%w: RoundCommitted of job %s round %d lists contributors %v, this aggregator's aggregation weighted %v", ErrNotOwn, b.JobID, b.Round, got, r.weights)
	}
	return nil
}

// Rejection returns the reason this aggregator rejected update digest of
// the round, if it did.
func (o *Own) Rejection(job string, round uint64, digest string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.rounds[ownKey{job, round}]; r != nil {
		why, ok := r.rejected[digest]
		return why, ok
	}
	return "", false
}

// Failure returns the reason of this aggregator's own failed aggregation
// of the round, if it failed.
func (o *Own) Failure(job string, round uint64) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r := o.rounds[ownKey{job, round}]; r != nil && r.failed != "" {
		return r.failed, true
	}
	return "", false
}

// Vet returns the body an aggregator signs when asked to sign body: for an
// UpdateRejected, its own rejection of that update (with its own reason);
// for a RoundFailed, its own failure of the round, or, when the ledger
// (lc) shows the round's deadline passed with fewer usable updates than
// the recipe's min_trainers, a RoundFailed saying so (usable: not
// rejected and fetchable, as fetch tells after FetchAttempts tries). Any
// other UpdateRejected or RoundFailed is refused with an error wrapping
// ErrNotOwn that names why. Other bodies are returned unchanged.
func (o *Own) Vet(ctx context.Context, lc *client.Client, body ledger.TxBody, fetch func(context.Context, string) error) (ledger.TxBody, error) {
	switch b := body.(type) {
	case ledger.UpdateRejected:
		why, ok := o.Rejection(b.JobID, b.Round, b.UpdateDigest)
		if !ok && strings.HasPrefix(b.Reason, UnverifiedPrefix) {
			if err := unverified(ctx, lc, b); err != nil {
				return nil, fmt.Errorf("%w: UpdateRejected of update %s in job %s round %d as unverified: %w", ErrNotOwn, b.UpdateDigest, b.JobID, b.Round, err)
			}
			return b, nil
		}
		if !ok {
			return nil, fmt.Errorf("%w: UpdateRejected of update %s in job %s round %d: this aggregator did not reject it (it neither failed its input checks nor was missing from the artifact store when this aggregator aggregated the round)",
				ErrNotOwn, b.UpdateDigest, b.JobID, b.Round)
		}
		b.Reason = why
		return b, nil
	case ledger.RoundFailed:
		if why, ok := o.Failure(b.JobID, b.Round); ok {
			b.Reason = why
			return b, nil
		}
		why, err := deadlineFailure(ctx, lc, b.JobID, b.Round, fetch)
		if err != nil {
			return nil, fmt.Errorf("%w: RoundFailed of job %s round %d: this aggregator's aggregation of the round did not fail, and %w", ErrNotOwn, b.JobID, b.Round, err)
		}
		b.Reason = why
		return b, nil
	}
	return body, nil
}

// deadlineFailure returns the reason of a RoundFailed the ledger shows is
// due: the round is open, its deadline is before the ledger's newest block
// (or this aggregator's clock), and fewer of its updates are usable than
// the recipe's min_trainers. Otherwise it returns an error naming why not.
func deadlineFailure(ctx context.Context, lc *client.Client, job string, round uint64, fetch func(context.Context, string) error) (string, error) {
	if lc == nil {
		return "", errors.New("there is no ledger to check the round's deadline on")
	}
	rec, err := lc.Job(ctx, job)
	if err != nil {
		return "", fmt.Errorf("the job's recipe: %w", err)
	}
	r, err := lc.Round(ctx, job, round)
	if err != nil {
		return "", err
	}
	if r.Status != ledger.StatusOpen {
		return "", fmt.Errorf("the round is %s on the ledger", r.Status)
	}
	now, err := ledgerTime(ctx, lc)
	if err != nil {
		return "", err
	}
	if own := time.Now(); own.After(now) {
		now = own
	}
	if now.Before(r.Deadline) {
		return "", fmt.Errorf("its deadline %s has not passed (the ledger's time is %s)", r.Deadline.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	usable := 0
	for _, u := range r.Updates {
		if u.Rejected {
			continue
		}
		if fetch == nil || FetchWithRetry(ctx, u.UpdateDigest, fetch) == nil {
			usable++
		}
	}
	need := rec.Recipe.MinTrainers
	if usable >= need {
		return "", fmt.Errorf("the round can still commit: %d of its updates on the ledger are usable and the recipe needs %d; aggregate it", usable, need)
	}
	return ledger.TruncateReason(fmt.Sprintf("deadline %s passed with %d usable updates on the ledger; the recipe needs %d",
		r.Deadline.UTC().Format(time.RFC3339), usable, need)), nil
}

// ledgerTime returns the time of the ledger's newest block.
func ledgerTime(ctx context.Context, lc *client.Client) (time.Time, error) {
	st, err := lc.Status(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("ledger status: %w", err)
	}
	vb, err := lc.Block(ctx, st.Height, 0, st.ChainId)
	if err != nil {
		return time.Time{}, fmt.Errorf("ledger block %d: %w", st.Height, err)
	}
	return time.Unix(0, vb.Block.Header.Time), nil
}

// FetchWithRetry calls fetch for digest up to FetchAttempts times with a
// doubling backoff and returns the last error, wrapped with how many
// attempts were made.
func FetchWithRetry(ctx context.Context, digest string, fetch func(context.Context, string) error) error {
	wait := fetchBackoff
	var err error
	for i := range FetchAttempts {
		if err = fetch(ctx, digest); err == nil {
			return nil
		}
		if i+1 < FetchAttempts {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
	}
	return fmt.Errorf("not in the artifact store after %d attempts: %w", FetchAttempts, err)
}

// undelivered returns, for each update the ledger records for the task's
// round that is neither rejected nor an input, the trainer and its digest.
func undelivered(ctx context.Context, lc *client.Client, a Task) ([]ledger.Update, error) {
	r, err := lc.Round(ctx, a.JobID, a.Round)
	if err != nil {
		return nil, fmt.Errorf("round %d on the ledger: %w", a.Round, err)
	}
	var out []ledger.Update
	for _, u := range r.Updates {
		if u.Rejected || slices.ContainsFunc(a.Inputs, func(in Input) bool { return in.Trainer == u.Trainer }) {
			continue
		}
		out = append(out, u)
	}
	return out, nil
}

// UnverifiedPrefix begins the reason of the UpdateRejected a coordinator
// asks for when a drawn update of a job with spot checks has no
// verifier's verdict by its verify timeout.
const UnverifiedPrefix = "unverified:"

// unverified checks on the ledger that update b.UpdateDigest of the round
// was drawn for a spot check and has no verdict: the one rejection this
// aggregator signs on the coordinator's word (the coordinator's verify
// timeout is its own to keep).
func unverified(ctx context.Context, lc *client.Client, b ledger.UpdateRejected) error {
	if lc == nil {
		return errors.New("no ledger client to check the draw")
	}
	r, err := lc.Round(ctx, b.JobID, b.Round)
	if err != nil {
		return err
	}
	for _, u := range r.Updates {
		if u.UpdateDigest != b.UpdateDigest {
			continue
		}
		switch {
		case !u.Drawn:
			return errors.New("the ledger shows it not drawn for a spot check")
		case u.VerifiedBy != "":
			return fmt.Errorf("verifier %s passed it", u.VerifiedBy)
		case u.Rejected:
			return fmt.Errorf("it is already rejected: %s", u.RejectReason)
		}
		return nil
	}
	return errors.New("the ledger records no such update in the round")
}
