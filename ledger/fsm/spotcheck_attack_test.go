package fsm

import (
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// Attacks on the spot-check rules that the happy-path tests do not try.

// A trainer selected for the job's next round before a verifier's
// rejection suspends it (rounds may overlap) must not get an update into
// that round: neither submit it nor have it committed.
func TestSpotCheckSuspendedInOverlappingRound(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendJob: true})
	c, ch, v := fx.c, fx.ch, fx.v
	a, b := c.trainers[0], c.trainers[1]
	base := digest("spot base")
	open1 := fx.open(t, "spot", 1, base, []*actor{a, b})
	open2 := fx.open(t, "spot", 2, base, []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open1))
	ch.mustApply(fx.submit(t, "spot", 1, open1, b, digest("b1")))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	// Round 2 opens, selecting b, while round 1 is being checked.
	ch.mustApply(c.coord.sign(t, open2))
	ch.mustApply(fx.submit(t, "spot", 2, open2, a, digest("a2")))
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: digest("b1"), Reason: "differs", Step: 1}))
	fx.refuse(t, "a suspended trainer submits to a round opened before its suspension",
		fx.submit(t, "spot", 2, open2, b, digest("b2")), "suspended from job")
}

// An update submitted to the overlapping round before the suspension
// landed cannot be committed once the trainer is suspended.
func TestSpotCheckSuspendedNotCommitted(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendJob: true})
	c, ch, v := fx.c, fx.ch, fx.v
	a, b := c.trainers[0], c.trainers[1]
	base := digest("spot base")
	open1 := fx.open(t, "spot", 1, base, []*actor{a, b})
	open2 := fx.open(t, "spot", 2, base, []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open1))
	ch.mustApply(fx.submit(t, "spot", 1, open1, b, digest("b1")))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	ch.mustApply(c.coord.sign(t, open2))
	ch.mustApply(fx.submit(t, "spot", 2, open2, b, digest("b2")))
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: digest("b1"), Reason: "differs", Step: 1}))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 2}))
	ch.mustApply(v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 2, UpdateDigest: digest("b2")}))
	commit := ledger.RoundCommitted{JobID: "spot", Round: 2, ModelDigest: digest("spot model 2"), Strategy: "fedavg", Params: fx.rc.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: b.id, UpdateDigest: digest("b2"), Weight: 1}}}
	fx.refuse(t, "a commit counting a suspended trainer", c.agg.sign(t, commit), "suspended from job")
}

// The aggregator cannot shield a drawn cheater from its suspension by
// rejecting it first (without a step): a verifier's rejection still lands
// and suspends it. Failing the round does not re-roll the draw: a
// rejection after it still lands (within the verify timeout) and
// suspends (spotcheck_late_test.go tries the window).
func TestSpotCheckAggregatorCannotShield(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendJob: true})
	c, ch, v := fx.c, fx.ch, fx.v
	a, b := c.trainers[0], c.trainers[1]
	base := digest("spot base")
	open1 := fx.open(t, "spot", 1, base, []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open1))
	ch.mustApply(fx.submit(t, "spot", 1, open1, a, digest("a1")), fx.submit(t, "spot", 1, open1, b, digest("b1")))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	ch.mustApply(c.agg.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: digest("b1"), Reason: "norm"}))
	fx.refuse(t, "a pass of an update the aggregator rejected", v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: digest("b1")}), "already rejected")
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: digest("b1"), Reason: "differs", Step: 1}))
	fx.refuse(t, "a second rejection once settled", v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: digest("b1"), Reason: "differs", Step: 1}), "already rejected")
	ch.mustApply(c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 1, Reason: "re-roll"}))
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: digest("a1"), Reason: "x", Step: 1}))
	fx.refuse(t, "round 2 selects the cheater", c.coord.sign(t, fx.open(t, "spot", 2, base, []*actor{b})), "suspended from job")
	fx.refuse(t, "round 2 selects the trainer rejected after the round failed", c.coord.sign(t, fx.open(t, "spot", 2, base, []*actor{a})), "suspended from job")
	r, err := ch.fsm.Round("spot", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range r.Updates {
		if u.Trainer == b.id && (u.RejectStep != 1 || u.RejectedBy != v.id) {
			t.Fatalf("b's update does not show the verifier's rejection: %+v", u)
		}
	}
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}

// A submission ordered after SubmissionsClosed in the closing block is
// refused: it would be covered by the hash it could try to steer.
func TestSpotCheckSubmissionAfterCloseInSameBlock(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 0.5})
	c, ch := fx.c, fx.ch
	a, b := c.trainers[0], c.trainers[1]
	open1 := fx.open(t, "spot", 1, digest("spot base"), []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open1))
	res := ch.propose(fx.submit(t, "spot", 1, open1, a, digest("a1")), c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}),
		fx.submit(t, "spot", 1, open1, b, digest("b1")), c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	for i, want := range []string{"", "", "closed for updates by its coordinator", "had its submissions closed"} {
		err := res.Results[i].Err
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Fatalf("tx %d: got %v, want %q", i, err, want)
		}
	}
}

// A verifier the rule names but the admin removed signs nothing; its
// earlier verdicts stay.
func TestSpotCheckRemovedVerifier(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1})
	c, ch, v := fx.c, fx.ch, fx.v
	a := c.trainers[0]
	open1 := fx.open(t, "spot", 1, digest("spot base"), []*actor{a})
	ch.mustApply(c.coord.sign(t, open1))
	ch.mustApply(fx.submit(t, "spot", 1, open1, a, digest("a1")))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	ch.mustApply(c.admin.sign(t, ledger.MemberRemoved{ID: v.id, Reason: "key lost"}))
	fx.refuse(t, "a pass by a removed verifier", v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: digest("a1")}), "was removed at height")
	fx.refuse(t, "a rejection by a removed verifier", v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: digest("a1"), Reason: "x", Step: 1}), "was removed at height")
}

// SubmissionsClosed names an open round of the job: not one never
// opened, not one already failed.
func TestSpotCheckCloseNeedsOpenRound(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1})
	c, ch := fx.c, fx.ch
	a := c.trainers[0]
	fx.refuse(t, "a close of a round never opened", c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}), "was never opened")
	fx.refuse(t, "a close of another job's round", c.coord.sign(t, ledger.SubmissionsClosed{JobID: "nosuch", Round: 1}), "is not registered")
	ch.mustApply(c.coord.sign(t, fx.open(t, "spot", 1, digest("spot base"), []*actor{a})))
	ch.mustApply(c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 1, Reason: "no updates"}))
	fx.refuse(t, "a close of a failed round", c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}), "failed at height")
}
