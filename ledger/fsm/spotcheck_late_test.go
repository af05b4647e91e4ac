package fsm

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// The draw stands once a round's submissions are closed: failing (or
// committing) the round before the verifiers' verdicts land does not
// re-roll it for a drawn cheater.

// closedRound opens round 1 of job "spot" with a and b, has both submit,
// closes the submissions and returns the updates' digests.
func (fx *spotFixture) closedRound(t *testing.T) (ua, ub string) {
	t.Helper()
	c, ch := fx.c, fx.ch
	a, b := c.trainers[0], c.trainers[1]
	open := fx.open(t, "spot", 1, digest("spot base"), []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open))
	ua, ub = digest("late a"), digest("late b")
	ch.mustApply(fx.submit(t, "spot", 1, open, a, ua), fx.submit(t, "spot", 1, open, b, ub))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}))
	return ua, ub
}

func TestSpotCheckLateRejectionAfterFailedRound(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendRounds: 2, Timeout: time.Hour})
	c, ch, v := fx.c, fx.ch, fx.v
	a, b, cc := c.trainers[0], c.trainers[1], c.trainers[2]
	ua, ub := fx.closedRound(t)
	// The aggregator fails the round after the draw, before any verdict.
	ch.mustApply(c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 1, Reason: "re-roll"}))
	r, err := ch.fsm.Round("spot", 1)
	if err != nil {
		t.Fatal(err)
	}
	closed, err := storedBlockTime(ch.db.State(), r.SubmissionsClosedHeight)
	if err != nil {
		t.Fatal(err)
	}
	if want := closed.Add(time.Hour).UnixNano(); r.VerdictsUntil != want {
		t.Fatalf("round query: verdicts_until %d, want %d (the closing block's time plus the timeout)", r.VerdictsUntil, want)
	}
	// The verifiers' verdicts still land on the failed round.
	ch.mustApply(v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: ua}))
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "replay differs", Step: 2}))
	ss, err := ch.fsm.Suspensions("spot")
	if err != nil {
		t.Fatal(err)
	}
	if want := []ledger.Suspension{{Trainer: b.id, Until: 3}}; !slices.Equal(ss, want) {
		t.Fatalf("suspensions %+v, want %+v", ss, want)
	}
	if ss, err := ch.fsm.Suspensions("other"); err != nil || len(ss) != 0 {
		t.Fatalf("suspensions of another job: %+v, %v", ss, err)
	}
	// The next round may not select b: it faces no fresh draw.
	fx.refuse(t, "round 2 selects the trainer a late rejection suspended",
		c.coord.sign(t, fx.open(t, "spot", 2, digest("spot base"), []*actor{a, b})), "suspended from job")
	ch.mustApply(c.coord.sign(t, fx.open(t, "spot", 2, digest("spot base"), []*actor{a, cc})))
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}

func TestSpotCheckLateVerdictWindow(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendJob: true, Timeout: time.Hour})
	c, ch, v := fx.c, fx.ch, fx.v
	_, ub := fx.closedRound(t)
	ch.mustApply(c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 1, Reason: "re-roll"}))
	ch.advance(time.Hour)
	fx.refuse(t, "a rejection after the verdict window", v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "late", Step: 1}),
		"verdict window ended")
	fx.refuse(t, "a pass after the verdict window", v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: ub}), "verdict window ended")
	if ss, err := ch.fsm.Suspensions("spot"); err != nil || len(ss) != 0 {
		t.Fatalf("suspensions %+v, %v; want none", ss, err)
	}
}

// With no timeout in the rule, the window is the round's own span (from
// its opening block to its deadline) after the close.
func TestSpotCheckLateVerdictWindowDefault(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendJob: true})
	c, ch, v := fx.c, fx.ch, fx.v
	_, ub := fx.closedRound(t)
	ch.mustApply(c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 1, Reason: "re-roll"}))
	ch.advance(23 * time.Hour)
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "late", Step: 1}))
	if ss, err := ch.fsm.Suspensions("spot"); err != nil || len(ss) != 1 || ss[0].Until != math.MaxUint64 {
		t.Fatalf("suspensions %+v, %v; want b for the rest of the job", ss, err)
	}
	fx2 := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendJob: true})
	_, ub2 := fx2.closedRound(t)
	fx2.ch.mustApply(fx2.c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 1, Reason: "re-roll"}))
	fx2.ch.advance(25 * time.Hour)
	fx2.refuse(t, "a rejection a day after the close", fx2.v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub2, Reason: "late", Step: 1}),
		"verdict window ended")
}

// A round that failed before its submissions were closed drew nothing.
func TestSpotCheckVerdictOnRoundFailedBeforeClose(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1})
	c, ch, v := fx.c, fx.ch, fx.v
	a := c.trainers[0]
	open := fx.open(t, "spot", 1, digest("spot base"), []*actor{a})
	ch.mustApply(c.coord.sign(t, open))
	ua := digest("early a")
	ch.mustApply(fx.submit(t, "spot", 1, open, a, ua))
	ch.mustApply(c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 1, Reason: "before the close"}))
	fx.refuse(t, "a verdict on a round failed before the close", v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ua, Reason: "x", Step: 1}),
		"before its submissions were closed")
}

// The aggregator rejects a drawn cheater itself and commits at once: the
// verifiers' rejection still lands on the committed round and suspends.
func TestSpotCheckLateRejectionAfterCommit(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendRounds: 1, Timeout: time.Hour})
	c, ch, v := fx.c, fx.ch, fx.v
	a, b := c.trainers[0], c.trainers[1]
	ua, ub := fx.closedRound(t)
	ch.mustApply(v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: ua}))
	ch.mustApply(c.agg.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "unverified: no verdict yet"}))
	ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: "spot", Round: 1, ModelDigest: digest("late model"), Strategy: "fedavg", Params: fx.rc.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: a.id, UpdateDigest: ua, Weight: 1}}}))
	fx.refuse(t, "a second pass on a committed round's update", v.sign(t, ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: ua}), "already verified")
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "replay differs", Step: 1}))
	fx.refuse(t, "round 2 selects b", c.coord.sign(t, fx.open(t, "spot", 2, digest("late model"), []*actor{a, b})), "suspended from job")
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}

// A rejection in an earlier round never shortens a suspension in force.
func TestSpotCheckSuspensionNeverShortened(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendRounds: 1})
	c, ch, v := fx.c, fx.ch, fx.v
	a, b := c.trainers[0], c.trainers[1]
	base := digest("spot base")
	open1 := fx.open(t, "spot", 1, base, []*actor{a, b})
	open2 := fx.open(t, "spot", 2, base, []*actor{a, b})
	ch.mustApply(c.coord.sign(t, open1), c.coord.sign(t, open2))
	ch.mustApply(fx.submit(t, "spot", 1, open1, a, digest("a1")), fx.submit(t, "spot", 2, open2, a, digest("a2")),
		fx.submit(t, "spot", 1, open1, b, digest("b1")), fx.submit(t, "spot", 2, open2, b, digest("b2")))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}), c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 2}))
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 2, UpdateDigest: digest("b2"), Reason: "differs", Step: 1}))
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: digest("b1"), Reason: "differs", Step: 1}))
	ss, err := ch.fsm.Suspensions("spot")
	if err != nil || len(ss) != 1 || ss[0].Until != 3 || ss[0].Suspended(4) || !ss[0].Suspended(3) {
		t.Fatalf("suspensions %+v, %v; want b until round 3 (round 2's rejection), not round 2", ss, err)
	}
	if !strings.Contains(ss[0].Trainer, b.id) {
		t.Fatalf("suspension of %s, want b", ss[0].Trainer)
	}
}
