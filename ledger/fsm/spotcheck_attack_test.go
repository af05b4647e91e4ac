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
	open1 := fx.open(t, "spot", 1, base, []*actor{b})
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
	b := c.trainers[1]
	base := digest("spot base")
	open1 := fx.open(t, "spot", 1, base, []*actor{b})
	open2 := fx.open(t, "spot", 2, base, []*actor{b})
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

// A close ordered before a selected trainer's submission in the same
// block is refused while that trainer may still submit (it would be left
// out of the draw); once every selected trainer has submitted, the close
// in the same block lands, and a second is refused.
func TestSpotCheckSubmissionAfterCloseInSameBlock(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 0.5})
	c, ch := fx.c, fx.ch
	a, b := c.trainers[0], c.trainers[1]
	open1 := fx.open(t, "spot", 1, digest("spot base"), []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open1))
	res := ch.propose(fx.submit(t, "spot", 1, open1, a, digest("a1")), c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}),
		fx.submit(t, "spot", 1, open1, b, digest("b1")), c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}),
		c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	for i, want := range []string{"", "may not close before the round's deadline", "", "", "had its submissions closed"} {
		err := res.Results[i].Err
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Fatalf("tx %d: got %v, want %q", i, err, want)
		}
	}
	if r, err := ch.fsm.Round("spot", 1); err != nil || r.SubmissionsClosedHeight != res.Block.Header.Height || len(r.Updates) != 2 {
		t.Fatalf("round %+v, %v: want both updates in and the close at height %d", r, err, res.Block.Header.Height)
	}
}

// Past the deadline (by block time) the coordinator closes a round
// whatever its selected trainers did; an update in the same block is
// refused for the deadline, before or after the close.
func TestSpotCheckCloseAfterDeadline(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1})
	c, ch := fx.c, fx.ch
	a, b := c.trainers[0], c.trainers[1]
	open1 := fx.open(t, "spot", 1, digest("spot base"), []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open1))
	ch.mustApply(fx.submit(t, "spot", 1, open1, a, digest("a1")))
	// At the deadline itself an update is still accepted, so no close.
	ch.advance(open1.Deadline.Sub(ch.now())) // the next proposal's time is the deadline
	res := ch.propose(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	if err := res.Results[0].Err; err == nil || !strings.Contains(err.Error(), "may not close before the round's deadline") {
		t.Fatalf("a close at the deadline: %v", err)
	}
	res = ch.propose(fx.submit(t, "spot", 1, open1, b, digest("b1")), c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	if err := res.Results[0].Err; err == nil || !strings.Contains(err.Error(), "closed for updates at") {
		t.Fatalf("an update after the deadline: %v", err)
	}
	if err := res.Results[1].Err; err != nil {
		t.Fatalf("a close after the deadline: %v", err)
	}
}

// A selected trainer the ledger no longer lets submit (removed from the
// members) does not hold a round open: its coordinator closes early.
func TestSpotCheckCloseWithoutRemovedTrainer(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1})
	c, ch := fx.c, fx.ch
	a, b := c.trainers[0], c.trainers[1]
	open1 := fx.open(t, "spot", 1, digest("spot base"), []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open1))
	ch.mustApply(fx.submit(t, "spot", 1, open1, a, digest("a1")))
	fx.refuse(t, "a close while b may submit", c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}), b.id)
	ch.mustApply(c.admin.sign(t, ledger.MemberRemoved{ID: b.id, Reason: "left"}))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
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

// In a job with verify every update discloses the digest of each of
// exactly the job's steps: an update without a commitment, one whose
// commitment keeps its step digests back, or one of other steps would
// leave a verifier unable to name the step a replay differs at.
func TestSpotCheckNeedsDisclosedSteps(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1})
	c, ch := fx.c, fx.ch
	a := c.trainers[0]
	open1 := fx.open(t, "spot", 1, digest("spot base"), []*actor{a})
	ch.mustApply(c.coord.sign(t, open1))
	mine := ledger.RangesOf(open1.Ranges, a.id)
	update := func(cm *ledger.TrainingCommitment) []byte {
		return a.sign(t, ledger.UpdateSubmitted{JobID: "spot", Round: 1, UpdateDigest: digest("a1"), DatasetDigest: fx.ds, Samples: mine[0].Size(), Ranges: mine, Commitment: cm})
	}
	hidden := disclosedCommitment(t, digest("a1"), spotSteps)
	hidden.StepDigests = nil
	fx.refuse(t, "an update without a commitment", update(nil), `job "spot" spot-checks its updates (verify): update `+digest("a1")+` has no commitment, so no commitment.step_digests`)
	fx.refuse(t, "an update keeping its step digests back", update(hidden), `job "spot" spot-checks its updates (verify): update `+digest("a1")+` lacks commitment.step_digests`)
	fx.refuse(t, "an update of fewer steps than the job's", update(disclosedCommitment(t, digest("a1"), spotSteps-1)), `commitment.steps 2: job "spot" spot-checks its updates (verify), each of exactly 3 steps`)
	ch.mustApply(update(disclosedCommitment(t, digest("a1"), spotSteps)))
}

// A job with verify whose updates, their step digests disclosed, could
// not fit the chain's max_tx_bytes is refused at registration, naming the
// sizes and the steps that fit; on a chain whose max_tx_bytes holds them
// it registers.
func TestSpotCheckJobMustFitMaxTxBytes(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1})
	c := fx.c
	rc := fx.rc
	rule := *rc.Verify
	rule.Steps = ledger.MaxDisclosedSteps
	rc.Verify = &rule
	fx.refuse(t, "a job of 4096 steps on the default policy", c.coord.sign(t, ledger.JobRegistered{JobID: "big", Recipe: rc}),
		"such an update takes up to 367")
	fx.refuse(t, "the same, its numbers", c.coord.sign(t, ledger.JobRegistered{JobID: "big", Recipe: rc}),
		"above the chain's policy max_tx_bytes 262144: at most 29")
	rule.Steps = 2048
	fx.ch.mustApply(c.coord.sign(t, ledger.JobRegistered{JobID: "fits", Recipe: rc}))
}
