package fsm

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/ledger"
)

// spotFixture is a job on published data with spot checks: trainers a, b
// and c of the cast have no data of their own, verifier v is the one the
// job names, other a verifier it does not name.
type spotFixture struct {
	c        *cast
	ch       *chain
	v, other *actor
	ds       string
	rc       ledger.RoundRecipe
}

func newSpotFixture(t *testing.T, job string, rule ledger.VerifyRule) *spotFixture {
	t.Helper()
	return newSpotFixtureWith(t, job, rule, nil)
}

// newSpotFixtureWith is newSpotFixture on a genesis that edit (nil: none)
// changes first.
func newSpotFixtureWith(t *testing.T, job string, rule ledger.VerifyRule, edit func(*ledger.Genesis)) *spotFixture {
	t.Helper()
	c := newCast()
	g := c.genesis(t)
	if edit != nil {
		edit(g)
	}
	ch := newChain(t, g, c.node.id)
	fx := &spotFixture{c: c, ch: ch, v: newActor("verifier-1", ledger.RoleVerifier), other: newActor("verifier-2", ledger.RoleVerifier)}
	a := c.trainers[0]
	env := testPublication(t, a.key, a.id, "pub-data", "CC-BY-4.0")
	sm, err := dspub.Decode([]byte(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	fx.ds = sm.Digest
	ch.mustApply(a.sign(t, ledger.DatasetPublished{Manifest: env}),
		c.coord.sign(t, ledger.ModelRegistered{Digest: digest("spot base"), Name: "m", Licence: "MIT", Source: "s"}),
		c.admin.sign(t, ledger.MemberAdded{PublicKey: fx.v.pubHex(), Role: ledger.RoleVerifier, Name: "verifier-1"}),
		c.admin.sign(t, ledger.MemberAdded{PublicKey: fx.other.pubHex(), Role: ledger.RoleVerifier, Name: "verifier-2"}))
	fx.rc = c.testRecipe()
	fx.rc.Published = []ledger.PublishedRef{{Digest: sm.Digest, Samples: sm.Samples}}
	fx.rc.RangeSeed, fx.rc.RangeSamples = 7, 1
	if rule.By == nil {
		rule.By = []string{fx.v.id}
	}
	if rule.Steps == 0 {
		rule.Steps = spotSteps
	}
	fx.rc.Verify = &rule
	ch.mustApply(c.coord.sign(t, ledger.JobRegistered{JobID: job, Recipe: fx.rc}))
	return fx
}

// spotDeadline is how long after its opening a round of the fixture
// takes updates.
const spotDeadline = 24 * time.Hour

// open is the RoundOpened of round n of job with trainers, due
// spotDeadline after the chain's clock.
func (fx *spotFixture) open(t *testing.T, job string, n uint64, base string, trainers []*actor) ledger.RoundOpened {
	t.Helper()
	var ids []string
	for _, tr := range trainers {
		ids = append(ids, tr.id)
	}
	ranges, err := fx.rc.Ranges(n, ids)
	if err != nil {
		t.Fatal(err)
	}
	return ledger.RoundOpened{JobID: job, Round: n, ConfigDigest: digest("cfg"), BaseModel: base, Strategy: "fedavg",
		Trainers: ids, Deadline: fx.ch.now().Add(spotDeadline), Ranges: ranges}
}

// spotSteps is the fixture's verify.steps unless a test gives its own.
const spotSteps = 3

// submit signs tr's update to round n of job, its commitment disclosing
// the job's verify.steps step digests.
func (fx *spotFixture) submit(t *testing.T, job string, n uint64, open ledger.RoundOpened, tr *actor, update string) []byte {
	t.Helper()
	mine := ledger.RangesOf(open.Ranges, tr.id)
	return tr.sign(t, ledger.UpdateSubmitted{JobID: job, Round: n, UpdateDigest: update, DatasetDigest: fx.ds, Samples: mine[0].Size(), Ranges: mine,
		Commitment: disclosedCommitment(t, update, fx.rc.Verify.Steps)})
}

// disclosedCommitment is a training commitment of steps steps for update
// that discloses every step's digest.
func disclosedCommitment(t testing.TB, update string, steps int) *ledger.TrainingCommitment {
	t.Helper()
	ds := make([]string, steps)
	for i := range ds {
		ds[i] = digest(fmt.Sprintf("%s step %d", update, i+1))
	}
	root, err := ledger.StepDigestsRoot(ds)
	if err != nil {
		t.Fatal(err)
	}
	return &ledger.TrainingCommitment{InputsDigest: digest("inputs of " + update), Steps: uint64(steps), StepRoot: root, StepDigests: ds}
}

// refuse proposes tx alone and wants it refused with an error containing
// want, the application state unchanged and no block made.
func (fx *spotFixture) refuse(t *testing.T, what string, tx []byte, want string) {
	t.Helper()
	before := dump(t, fx.ch.db.State(), prefixApp)
	res := fx.ch.propose(tx)
	if err := res.Results[0].Err; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: got %v, want an error containing %q", what, err, want)
	} else {
		t.Logf("%s: refused: %v", what, err)
	}
	if res.Block != nil {
		t.Fatalf("%s: a block was made", what)
	}
	if after := dump(t, fx.ch.db.State(), prefixApp); !slices.Equal(before, after) {
		t.Fatalf("%s: the state changed", what)
	}
}

func TestSpotCheckRound(t *testing.T) {
	fx := newSpotFixture(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendRounds: 1})
	c, ch, v := fx.c, fx.ch, fx.v
	a, b, cc := c.trainers[0], c.trainers[1], c.trainers[2]
	open := fx.open(t, "spot", 1, digest("spot base"), []*actor{a, b, cc})
	ch.mustApply(c.coord.sign(t, open))
	ua, ub, uc := digest("update a"), digest("update b"), digest("update c")
	ch.mustApply(fx.submit(t, "spot", 1, open, a, ua), fx.submit(t, "spot", 1, open, b, ub))
	commit := func(trainers ...*actor) ledger.RoundCommitted {
		var ct []ledger.Contribution
		for _, tr := range trainers {
			u := map[string]string{a.id: ua, b.id: ub}[tr.id]
			ct = append(ct, ledger.Contribution{Trainer: tr.id, UpdateDigest: u, Weight: 1 / float64(len(trainers))})
		}
		return ledger.RoundCommitted{JobID: "spot", Round: 1, ModelDigest: digest("spot model"), Strategy: "fedavg", Params: fx.rc.CommitParams(), Contributors: ct}
	}
	verified := func(u string) ledger.UpdateVerified {
		return ledger.UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: u}
	}

	// An update that claims the trainer's own data would escape the draw.
	own := digest("c's own data")
	ch.mustApply(cc.sign(t, ledger.DatasetRegistered{Digest: own, Name: "own", Licence: "MIT", Source: "local", Samples: 50, Root: testDatasetRoot}))
	mine := ledger.RangesOf(open.Ranges, cc.id)
	fx.refuse(t, "an update on the trainer's own data", cc.sign(t, ledger.UpdateSubmitted{JobID: "spot", Round: 1, UpdateDigest: uc, DatasetDigest: own,
		Samples: 1, Ranges: mine}), "spot-checks its updates (verify), so an update must be trained on its published data alone")
	fx.refuse(t, "verdict before the close", v.sign(t, verified(ua)), "has not closed its submissions")
	fx.refuse(t, "commit before the close", c.agg.sign(t, commit(a, b)), "has not closed its submissions")
	fx.refuse(t, "close by a non-owner", c.agg.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}), "needs role coordinator")
	// c, selected, has not submitted and still may: the coordinator may
	// not close before the deadline and leave it out of the draw.
	fx.refuse(t, "a close before the deadline with a selected trainer yet to submit", c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}),
		"submissions may not close before the round's deadline")
	ch.advance(spotDeadline)
	fx.refuse(t, "c's update after the deadline", fx.submit(t, "spot", 1, open, cc, uc), "closed for updates at")

	// The close and a verdict in the same block: the verdict cannot know
	// the block's hash.
	res := ch.propose(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}), v.sign(t, verified(ua)))
	if res.Results[0].Err != nil {
		t.Fatal(res.Results[0].Err)
	}
	if err := res.Results[1].Err; err == nil || !strings.Contains(err.Error(), "in this block") {
		t.Fatalf("a verdict in the closing block: %v", err)
	}
	r, err := ch.fsm.Round("spot", 1)
	if err != nil || r.SubmissionsClosedHeight != res.Block.Header.Height {
		t.Fatalf("round %+v, %v", r, err)
	}
	seed := res.Block.Hash()
	if !fx.rc.DrawnUpdate(seed, "spot", 1, &r.Updates[0]) {
		t.Fatal("fraction 1 did not draw an update")
	}
	if r.DrawSeed != hex.EncodeToString(seed[:]) || len(r.Updates) != 2 || !r.Updates[0].Drawn || !r.Updates[1].Drawn {
		t.Fatalf("the round's query does not show the draw: seed %s, updates %+v", r.DrawSeed, r.Updates)
	}

	fx.refuse(t, "a submission after the draw", fx.submit(t, "spot", 1, open, cc, uc), "closed for updates by its coordinator")
	fx.refuse(t, "a second close", c.coord.sign(t, ledger.SubmissionsClosed{JobID: "spot", Round: 1}), "had its submissions closed")
	fx.refuse(t, "a verdict from an auditor", c.auditor.sign(t, verified(ua)), "needs role verifier")
	fx.refuse(t, "a verdict from a verifier the job does not name", fx.other.sign(t, verified(ua)), "is not one the verify rule")
	fx.refuse(t, "a rejection naming a step from the aggregator", c.agg.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "x", Step: 2}), "only a verifier's rejection")
	fx.refuse(t, "a verifier's rejection without a step", v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "x"}), "step is required")
	fx.refuse(t, "a verdict on an unknown update", v.sign(t, verified(uc)), "no update")
	fx.refuse(t, "a commit that counts drawn updates without verdicts", c.agg.sign(t, commit(a, b)), "no verifier of job")

	ch.mustApply(v.sign(t, verified(ua)))
	fx.refuse(t, "a second verdict", v.sign(t, verified(ua)), "already verified")
	fx.refuse(t, "a rejection after a pass", v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ua, Reason: "x", Step: 1}), "already verified")
	fx.refuse(t, "a commit that counts b, drawn and unverified", c.agg.sign(t, commit(a, b)), "update "+ub)
	ch.mustApply(v.sign(t, ledger.UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: ub, Reason: "replay differs at step 2", Step: 2}))
	fx.refuse(t, "a pass after a rejection", v.sign(t, verified(ub)), "already rejected")
	ch.mustApply(c.agg.sign(t, commit(a)))
	fx.refuse(t, "a pass for a committed round's rejected update", v.sign(t, verified(ub)), "already rejected")

	r, err = ch.fsm.Round("spot", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range r.Updates {
		switch u.Trainer {
		case a.id:
			if u.VerifiedBy != v.id || u.Rejected {
				t.Fatalf("a: %+v", u)
			}
		case b.id:
			if !u.Rejected || u.RejectStep != 2 || u.RejectedBy != v.id {
				t.Fatalf("b: %+v", u)
			}
		}
	}
	// b is suspended for round 2 (suspend_rounds 1), not for round 3.
	open2 := fx.open(t, "spot", 2, digest("spot model"), []*actor{a, b})
	fx.refuse(t, "round 2 selects the suspended trainer", c.coord.sign(t, open2), "suspended from job")
	ch.mustApply(c.coord.sign(t, fx.open(t, "spot", 2, digest("spot model"), []*actor{a, cc})))
	ch.mustApply(c.agg.sign(t, ledger.RoundFailed{JobID: "spot", Round: 2, Reason: "no updates"}))
	ch.mustApply(c.coord.sign(t, fx.open(t, "spot", 3, digest("spot model"), []*actor{a, b})))
	// The chain, draws and verdicts included, re-derives from genesis.
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}

func TestSpotCheckUndrawn(t *testing.T) {
	// The smallest fraction (2^-32) draws no update of this test.
	fx := newSpotFixture(t, "rare", ledger.VerifyRule{Fraction: ledger.MinFraction, SuspendJob: true})
	c, ch := fx.c, fx.ch
	a := c.trainers[0]
	open := fx.open(t, "rare", 1, digest("spot base"), []*actor{a})
	ch.mustApply(c.coord.sign(t, open))
	ua := digest("update a")
	ch.mustApply(fx.submit(t, "rare", 1, open, a, ua))
	ch.mustApply(c.coord.sign(t, ledger.SubmissionsClosed{JobID: "rare", Round: 1}))
	if r, err := ch.fsm.Round("rare", 1); err != nil || r.DrawSeed == "" || r.Updates[0].Drawn {
		t.Fatalf("round %+v, %v: want a seed and no update drawn", r, err)
	}
	fx.refuse(t, "a verdict for an undrawn update", fx.v.sign(t, ledger.UpdateVerified{JobID: "rare", Round: 1, UpdateDigest: ua}), "was not drawn")
	ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: "rare", Round: 1, ModelDigest: digest("rare model"), Strategy: "fedavg", Params: fx.rc.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: a.id, UpdateDigest: ua, Weight: 1}}}))
}

func TestSpotCheckNeedsRule(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx := c.setupRound(t, ch)
	res := ch.propose(c.coord.sign(t, ledger.SubmissionsClosed{JobID: fx.job, Round: 1}))
	if err := res.Results[0].Err; err == nil || !strings.Contains(err.Error(), "has no verify rule") {
		t.Fatalf("close of a job without spot checks: %v", err)
	}
}

func TestVerifyRuleValidate(t *testing.T) {
	id := digest("v")
	for _, tc := range []struct {
		name string
		rule ledger.VerifyRule
		want string
	}{
		{"zero fraction", ledger.VerifyRule{Steps: 3, Fraction: 0, By: []string{id}}, "fraction 0"},
		{"fraction that draws nothing", ledger.VerifyRule{Steps: 3, Fraction: 1e-300, By: []string{id}}, "less than one update in 2^32"},
		{"fraction just under the floor", ledger.VerifyRule{Steps: 3, Fraction: 0x1p-33, By: []string{id}}, "less than one update in 2^32"},
		{"fraction at the floor", ledger.VerifyRule{Steps: 3, Fraction: ledger.MinFraction, By: []string{id}}, ""},
		{"fraction 1", ledger.VerifyRule{Steps: 3, Fraction: 1, By: []string{id}}, ""},
		{"fraction over 1", ledger.VerifyRule{Steps: 3, Fraction: 1.5, By: []string{id}}, "fraction 1.5"},
		{"no verifiers", ledger.VerifyRule{Steps: 3, Fraction: 0.5}, "0 verifiers"},
		{"bad id", ledger.VerifyRule{Steps: 3, Fraction: 0.5, By: []string{"x"}}, "not a member ID"},
		{"twice", ledger.VerifyRule{Steps: 3, Fraction: 0.5, By: []string{id, id}}, "listed twice"},
		{"two policies", ledger.VerifyRule{Steps: 3, Fraction: 0.5, By: []string{id}, SuspendRounds: 2, SuspendJob: true}, "one suspension policy"},
		{"ok", ledger.VerifyRule{Steps: 3, Fraction: 0.5, By: []string{id}, SuspendRounds: 2}, ""},
		{"negative timeout", ledger.VerifyRule{Steps: 3, Fraction: 0.5, By: []string{id}, Timeout: -time.Second}, "recipe.verify.timeout -1s"},
		{"timeout too long", ledger.VerifyRule{Steps: 3, Fraction: 0.5, By: []string{id}, Timeout: ledger.MaxVerifyTimeout + 1}, "recipe.verify.timeout"},
		{"ok with a timeout", ledger.VerifyRule{Steps: 3, Fraction: 0.5, By: []string{id}, SuspendRounds: 2, Timeout: time.Hour}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rule.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDrawnFraction(t *testing.T) {
	var seed [32]byte
	n := 0
	for i := 0; i < 4000; i++ {
		seed[0], seed[1] = byte(i), byte(i>>8)
		if ledger.Drawn(seed, "job", 1, digest("t"), 0.25) {
			n++
		}
	}
	if n < 850 || n > 1150 {
		t.Fatalf("fraction 0.25 drew %d of 4000", n)
	}
}
