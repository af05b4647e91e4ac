package fsm

import (
	"slices"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// A JobCancelled after a round's submissions were closed fails the round
// as a RoundFailed would and leaves its draw as it stands: the drawn
// updates stay drawn, the verdict window is the close's, and a verifier's
// rejection still lands and suspends. No round of the job opens again.
func TestJobCancelledKeepsTheDraw(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendRounds: 2, Timeout: time.Hour})
	c, ch, v := fx.c, fx.ch, fx.v
	a, b := c.trainers[0], c.trainers[1]
	ua, ub := fx.closedRound(t)
	before, err := ch.fsm.Round("spot", 1)
	if err != nil {
		t.Fatal(err)
	}
	ch.mustApply(c.coord.sign(t, ledger.JobCancelled{JobID: "spot", Reason: "wrong network"}))
	r, err := ch.fsm.Round("spot", 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != ledger.StatusFailed || r.FailReason != ledger.CancelledPrefix+"wrong network" {
		t.Fatalf("round after the cancel: %s %q; want failed with the cancel's reason", r.Status, r.FailReason)
	}
	if r.SubmissionsClosedHeight != before.SubmissionsClosedHeight || r.VerdictsUntil != before.VerdictsUntil {
		t.Fatalf("the cancel moved the close: height %d→%d, verdicts until %d→%d", before.SubmissionsClosedHeight, r.SubmissionsClosedHeight,
			before.VerdictsUntil, r.VerdictsUntil)
	}
	drawn := func(r *ledger.Round) []bool {
		var d []bool
		for _, u := range r.Updates {
			d = append(d, u.Drawn)
		}
		return d
	}
	if !slices.Equal(drawn(r), drawn(before)) || !slices.Contains(drawn(r), true) {
		t.Fatalf("drawn after the cancel %v, before %v", drawn(r), drawn(before))
	}
	ch.mustApply(v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: ua}))
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "replay differs", Step: 2}))
	if ss, err := ch.fsm.Suspensions("spot"); err != nil || len(ss) != 1 || ss[0].Trainer != b.id {
		t.Fatalf("suspensions %+v, %v; want b's", ss, err)
	}
	fx.refuse(t, "a round opened after the cancel", c.coord.sign(t, fx.open(t, "spot", 2, digest("spot base"), []*actor{a, c.trainers[2]})),
		"was cancelled at height")
	fx.refuse(t, "a second cancel", c.coord.sign(t, ledger.JobCancelled{JobID: "spot", Reason: "again"}), "already cancelled")
	fx.refuse(t, "a RoundFailed after the cancel", c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 1, Reason: "re-roll"}), "failed at height")
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}

// A commit that lands before the cancel stands: the cancellation fails no
// round, and the job's record says so.
func TestJobCancelledAfterCommit(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendRounds: 1, Timeout: time.Hour})
	c, ch, v := fx.c, fx.ch, fx.v
	a := c.trainers[0]
	ua, ub := fx.closedRound(t)
	ch.mustApply(v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: ua}))
	ch.mustApply(c.agg.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "unverified: no verdict yet"}))
	ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: "spot", Round: 1, ModelDigest: digest("cancel model"), Strategy: "fedavg", Params: fx.rc.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: a.id, UpdateDigest: ua, Weight: 1}}}))
	ch.mustApply(c.coord.sign(t, ledger.JobCancelled{JobID: "spot", Reason: "done with it"}))
	r, err := ch.fsm.Round("spot", 1)
	if err != nil || r.Status != ledger.StatusCommitted || r.ModelDigest != digest("cancel model") {
		t.Fatalf("round 1 after the cancel: %+v, %v; want it committed", r, err)
	}
	job, err := ch.fsm.Job("spot")
	if err != nil || job.Cancelled == nil || job.Cancelled.Round != 0 || job.Cancelled.Reason != "done with it" {
		t.Fatalf("job record %+v, %v; want cancelled, no round failed", job, err)
	}
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}
