package adversarial

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// TestAttackSpotChecks: lies about a job's spot checks, on a real
// three-node ledger. A job on published data names verifier-1 in its
// verify rule (fraction 1, suspend for the job); trainers 2 and 3
// submitted to its round 1 and trainer-1 did not. An update claiming the
// trainer's own data (to escape the draw), a close of the submissions
// before the deadline while trainer-1 may still submit (leaving it out of
// the draw), an update without a commitment, one keeping its step digests
// back, one of other steps than the job's verify.steps, a verify job whose
// disclosed updates could not fit the chain's max_tx_bytes, one whose disclosed step
// digests are not its step root's, a quorum above the verifiers listed
// (refused by the ledger and, as YAML, by the coordinator), a verdict before the
// draw, a commit before the draw, a close by a coordinator that does not
// own the job, a submission after the draw, a verdict from an auditor
// (not a verifier), from a verifier the job does not name, a commit that
// counts drawn updates without verdicts, a second verdict, a verifier's
// rejection without a step, an aggregator's rejection naming a step, a
// verdict for a committed round, a round that selects the suspended
// trainer, and a verdict for an update the draw left out: each is refused
// with its reason and the chain does not move.
func TestAttackSpotChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &roundsNet{nw: nw, c: c, signers: map[string]*client.Signer{}, job: "adv-spot", datasets: map[string]string{}, updates: map[string]string{}}
	for name, key := range nw.Keys {
		r.signers[name] = client.NewSigner(c, key)
	}
	ids := map[string]string{}
	for name, role := range map[string]ledger.Role{"coordinator-2": ledger.RoleCoordinator, "verifier-1": ledger.RoleVerifier, "verifier-2": ledger.RoleVerifier, "verifier-3": ledger.RoleVerifier} {
		key := newKey(t)
		r.signers[name] = client.NewSigner(c, key)
		ids[name] = ledger.KeyID(key.Public().(ed25519.PublicKey))
		r.must(t, ctx, "admin", ledger.MemberAdded{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Role: role, Name: name})
	}
	// trainer-1 publishes a dataset (its shards need not exist for the
	// ledger's rules).
	m := dspub.Manifest{Version: dspub.Version, Name: "spot-data", Format: dspub.FormatText, Licence: "CC0-1.0", Owner: nw.ID("trainer-1"),
		Samples: 30, Bytes: 300, Root: digestOf("root"), Leaves: digestOf("leaves"),
		Shards: []dspub.Shard{{Digest: digestOf("shard"), First: 0, Samples: 30, Bytes: 300}}}
	sm, err := dspub.Sign(nw.Keys["trainer-1"], &m)
	if err != nil {
		t.Fatal(err)
	}
	r.must(t, ctx, "trainer-1", ledger.DatasetPublished{Manifest: string(sm.Envelope)})
	r.base = digestOf("spot base model")
	r.must(t, ctx, "coordinator", ledger.ModelRegistered{Digest: r.base, Name: "base", Licence: "CC0-1.0", Source: "test"})
	recipe := func(fraction float64) ledger.RoundRecipe {
		return ledger.RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{nw.ID("aggregator")},
			Published: []ledger.PublishedRef{{Digest: sm.Digest, Samples: 30}}, RangeSeed: 5, RangeSamples: 4,
			Verify: &ledger.VerifyRule{Fraction: fraction, By: []string{ids["verifier-1"]}, SuspendJob: true, Steps: spotSteps}}
	}
	rc := recipe(1)
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: r.job, Recipe: rc})
	open := func(job string, rc ledger.RoundRecipe, n uint64, base string, names ...string) ledger.RoundOpened {
		var trainers []string
		for _, nm := range names {
			trainers = append(trainers, nw.ID(nm))
		}
		ranges, err := rc.Ranges(n, trainers)
		if err != nil {
			t.Fatal(err)
		}
		return ledger.RoundOpened{JobID: job, Round: n, ConfigDigest: digestOf("config"), BaseModel: base, Strategy: "fedavg",
			Trainers: trainers, Deadline: time.Now().Add(time.Hour), Ranges: ranges}
	}
	// Round 1 is due soon: trainer-1 never submits, so its coordinator
	// may close it only once the deadline has passed.
	o1 := open(r.job, rc, 1, r.base, "trainer-1", "trainer-2", "trainer-3")
	o1.Deadline = time.Now().Add(12 * time.Second)
	r.must(t, ctx, "coordinator", o1)
	submit := func(job string, o ledger.RoundOpened, name string) ledger.UpdateSubmitted {
		mine := ledger.RangesOf(o.Ranges, nw.ID(name))
		u := digestOf(job + " update of " + name)
		return ledger.UpdateSubmitted{JobID: job, Round: o.Round, UpdateDigest: u, DatasetDigest: sm.Digest,
			Samples: mine[0].Size(), Ranges: mine, Commitment: disclosedCommitment(t, u, spotSteps)}
	}
	for _, tr := range []string{"trainer-2", "trainer-3"} {
		b := submit(r.job, o1, tr)
		r.updates[tr] = b.UpdateDigest
		r.must(t, ctx, tr, b)
	}
	verified := func(name string) ledger.UpdateVerified {
		return ledger.UpdateVerified{JobID: r.job, Round: 1, UpdateDigest: r.updates[name]}
	}
	commit := func(names ...string) ledger.RoundCommitted {
		return ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: digestOf("spot model"), Strategy: "fedavg", Params: rc.CommitParams(), Contributors: r.contrib(names...)}
	}

	t.Run("update on the trainer's own data, which no verifier could replay", func(t *testing.T) {
		own := digestOf("trainer-1's own data")
		r.must(t, ctx, "trainer-1", ledger.DatasetRegistered{Digest: own, Name: "own", Licence: "CC0-1.0", Source: "test", Samples: 50, Root: digestOf("own root"), Bytes: 500})
		b := submit(r.job, o1, "trainer-1")
		b.DatasetDigest = own
		r.attack(t, ctx, "trainer-1", b, "spot-checks its updates (verify)", "published data alone")
	})
	t.Run("close before the deadline while a selected trainer may still submit", func(t *testing.T) {
		// trainer-1 would be left out of the draw.
		r.attack(t, ctx, "coordinator", ledger.SubmissionsClosed{JobID: r.job, Round: 1}, "may not close before the round's deadline", "1 of its 3 selected trainers", nw.ID("trainer-1"))
	})
	t.Run("update without a commitment, so no step digests", func(t *testing.T) {
		b := submit(r.job, o1, "trainer-1")
		b.Commitment = nil
		r.attack(t, ctx, "trainer-1", b, `job "adv-spot" spot-checks its updates (verify)`, "has no commitment, so no commitment.step_digests")
	})
	t.Run("update keeping its step digests back", func(t *testing.T) {
		b := submit(r.job, o1, "trainer-1")
		b.Commitment.StepDigests = nil
		r.attack(t, ctx, "trainer-1", b, `job "adv-spot" spot-checks its updates (verify)`, "lacks commitment.step_digests")
	})
	t.Run("update of other steps than the job's", func(t *testing.T) {
		b := submit(r.job, o1, "trainer-1")
		b.Commitment = disclosedCommitment(t, b.UpdateDigest, spotSteps+1)
		r.attack(t, ctx, "trainer-1", b, "commitment.steps 3", "each of exactly 2 steps (verify.steps)")
	})
	t.Run("job whose disclosed updates cannot fit max_tx_bytes", func(t *testing.T) {
		big := recipe(1)
		big.Verify.Steps = ledger.MaxDisclosedSteps
		r.attack(t, ctx, "coordinator", ledger.JobRegistered{JobID: "adv-big", Recipe: big}, "recipe.verify.steps 4096", "above the chain's policy max_tx_bytes 262144", "steps per update fit")
	})
	t.Run("update whose disclosed step digests are not its step root's", func(t *testing.T) {
		// SignTx refuses to write it, so the lying trainer signs its own
		// payload: step digests of an honest-looking run under the root
		// of another.
		b := submit(r.job, o1, "trainer-1")
		body := fmt.Sprintf(`{"job_id":%q,"round":1,"update_digest":%q,"dataset_digest":%q,"samples":%d,"commitment":{"inputs_digest":%q,"steps":2,"step_root":%q,"step_digests":[%q,%q]},"ranges":[{"dataset":%q,"first":%d,"end":%d}]}`,
			r.job, b.UpdateDigest, sm.Digest, b.Samples, digestOf("inputs"), digestOf("another root"), digestOf("s1"), digestOf("s2"),
			b.Ranges[0].Dataset, b.Ranges[0].First, b.Ranges[0].End)
		id := nw.ID("trainer-1")
		payload := fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, nw.ChainID, id, payloadNonce(t, ctx, c, id)+1, ledger.TypeUpdateSubmitted, body)
		before := waitSettled(t, ctx, nw.Net)
		_, err := c.SubmitWait(ctx, payloadSignRaw(nw.Keys["trainer-1"], payload))
		if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), "commitment.step_digests hash to") {
			t.Fatalf("error %v, want a rejection naming the step digests", err)
		}
		t.Logf("refused: %v", err)
		requireUnchanged(t, ctx, nw.Net, before)
	})
	t.Run("verdict before the draw", func(t *testing.T) {
		r.attack(t, ctx, "verifier-1", verified("trainer-2"), "has not closed its submissions")
	})
	t.Run("commit before the draw", func(t *testing.T) {
		r.attack(t, ctx, "aggregator", commit("trainer-2", "trainer-3"), "has not closed its submissions")
	})
	t.Run("close by a coordinator that does not own the job", func(t *testing.T) {
		r.attack(t, ctx, "coordinator-2", ledger.SubmissionsClosed{JobID: r.job, Round: 1}, "is owned by coordinator", "may not close")
	})
	// Past the deadline (by block time) the round closes without trainer-1.
	time.Sleep(time.Until(o1.Deadline) + 500*time.Millisecond)
	r.must(t, ctx, "coordinator", ledger.SubmissionsClosed{JobID: r.job, Round: 1})
	t.Run("submission after the draw", func(t *testing.T) {
		r.attack(t, ctx, "trainer-1", submit(r.job, o1, "trainer-1"), "closed for updates by its coordinator")
	})
	t.Run("verdict from an auditor", func(t *testing.T) {
		r.attack(t, ctx, "auditor", verified("trainer-2"), "UpdateVerified needs role verifier")
	})
	t.Run("verdict from a verifier the job does not name", func(t *testing.T) {
		r.attack(t, ctx, "verifier-2", verified("trainer-2"), "is not one the verify rule of job")
	})
	t.Run("commit that counts drawn updates without verdicts", func(t *testing.T) {
		r.attack(t, ctx, "aggregator", commit("trainer-2", "trainer-3"), "was drawn for a spot check and no verifier", "has passed it")
	})
	r.must(t, ctx, "verifier-1", verified("trainer-2"))
	t.Run("second verdict", func(t *testing.T) {
		r.attack(t, ctx, "verifier-1", verified("trainer-2"), "already verified")
	})
	t.Run("quorum above the verifiers listed", func(t *testing.T) {
		bad := recipe(1)
		bad.Verify.Quorum = 2
		// SignTx refuses to write it, so the coordinator signs its own
		// payload.
		body, err := json.Marshal(ledger.JobRegistered{JobID: "adv-quorum-bad", Recipe: bad})
		if err != nil {
			t.Fatal(err)
		}
		id := nw.ID("coordinator")
		payload := fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, nw.ChainID, id, payloadNonce(t, ctx, c, id)+1, ledger.TypeJobRegistered, body)
		before := waitSettled(t, ctx, nw.Net)
		_, err = c.SubmitWait(ctx, payloadSignRaw(nw.Keys["coordinator"], payload))
		if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), "recipe.verify.quorum 2") || !strings.Contains(err.Error(), "1 verifiers listed") {
			t.Fatalf("error %v, want a rejection naming the quorum", err)
		}
		t.Logf("refused: %v", err)
		requireUnchanged(t, ctx, nw.Net, before)
		// The job's YAML is refused before it reaches the ledger.
		yaml := fmt.Sprintf("name: adv-quorum-bad\nmodel:\n  digest: %s\ndatasets:\n  published: [%s]\nverify:\n  fraction: 1\n  by: [%s]\n  quorum: 2\n",
			r.base, sm.Digest, ids["verifier-1"])
		if _, err := coordinator.ParseJob("job.yaml", []byte(yaml)); err == nil || !strings.Contains(err.Error(), "verify.quorum: 2 is more than the 1 verifiers verify.by lists") {
			t.Fatalf("ParseJob: %v, want an error naming verify.quorum and both numbers", err)
		} else {
			t.Logf("job YAML refused: %v", err)
		}
		requireUnchanged(t, ctx, nw.Net, before)
	})
	t.Run("verifier's rejection without a step", func(t *testing.T) {
		r.attack(t, ctx, "verifier-1", ledger.UpdateRejected{JobID: r.job, Round: 1, UpdateDigest: r.updates["trainer-3"], Reason: "differs"}, "step is required")
	})
	t.Run("aggregator's rejection naming a step", func(t *testing.T) {
		r.attack(t, ctx, "aggregator", ledger.UpdateRejected{JobID: r.job, Round: 1, UpdateDigest: r.updates["trainer-3"], Reason: "differs", Step: 2},
			"only a verifier's rejection of a drawn update names a step")
	})
	r.must(t, ctx, "verifier-1", ledger.UpdateRejected{JobID: r.job, Round: 1, UpdateDigest: r.updates["trainer-3"], Reason: "spot check: step 2 differs", Step: 2})
	r.must(t, ctx, "aggregator", commit("trainer-2"))
	t.Run("pass for a committed round's rejected update", func(t *testing.T) {
		r.attack(t, ctx, "verifier-1", verified("trainer-3"), "already rejected")
	})
	t.Run("round that selects the suspended trainer", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", open(r.job, rc, 2, digestOf("spot model"), "trainer-2", "trainer-3"), "is suspended from job", "for the rest of the job")
	})

	// The aggregator fails a round after its draw, before the verifier's
	// rejection of the drawn cheater lands, to give it a fresh draw: the
	// draw stands, the late rejection suspends it, and the next round may
	// not select it.
	const fjob = "adv-reroll"
	fr := recipe(1)
	fr.Verify.Timeout = time.Hour
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: fjob, Recipe: fr})
	fo1 := open(fjob, fr, 1, r.base, "trainer-2", "trainer-3")
	r.must(t, ctx, "coordinator", fo1)
	fu2, fu3 := submit(fjob, fo1, "trainer-2"), submit(fjob, fo1, "trainer-3")
	r.must(t, ctx, "trainer-2", fu2)
	r.must(t, ctx, "trainer-3", fu3)
	r.must(t, ctx, "coordinator", ledger.SubmissionsClosed{JobID: fjob, Round: 1})
	r.must(t, ctx, "aggregator", ledger.RoundFailed{JobID: fjob, Round: 1, Reason: "re-roll the draw"})
	r.must(t, ctx, "verifier-1", ledger.UpdateVerified{JobID: fjob, Round: 1, UpdateDigest: fu2.UpdateDigest})
	r.must(t, ctx, "verifier-1", ledger.UpdateRejected{JobID: fjob, Round: 1, UpdateDigest: fu3.UpdateDigest, Reason: "spot check: step 1 differs", Step: 1})
	if ss, err := c.Suspensions(ctx, fjob, 0); err != nil || len(ss) != 1 || ss[0].Trainer != nw.ID("trainer-3") || !ss[0].Suspended(2) {
		t.Fatalf("suspensions of %s: %+v, %v; want trainer-3 for the rest of the job", fjob, ss, err)
	}
	t.Run("round that re-rolls the draw for a cheater rejected after its round failed", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", open(fjob, fr, 2, r.base, "trainer-2", "trainer-3"), "is suspended from job", "for the rest of the job")
	})
	r.must(t, ctx, "coordinator", open(fjob, fr, 2, r.base, "trainer-2"))

	// Past the verdict window of a failed round (here a timeout of 1 ms
	// after the closing block) a verdict is refused: the drawn update
	// stays unverified and its trainer unsuspended.
	const wjob = "adv-window"
	wr := recipe(1)
	wr.Verify.Timeout = time.Millisecond
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: wjob, Recipe: wr})
	wo := open(wjob, wr, 1, r.base, "trainer-3")
	r.must(t, ctx, "coordinator", wo)
	wu := submit(wjob, wo, "trainer-3")
	r.must(t, ctx, "trainer-3", wu)
	r.must(t, ctx, "coordinator", ledger.SubmissionsClosed{JobID: wjob, Round: 1})
	r.must(t, ctx, "aggregator", ledger.RoundFailed{JobID: wjob, Round: 1, Reason: "no verdict in time"})
	t.Run("verdict after a failed round's verdict window", func(t *testing.T) {
		r.attack(t, ctx, "verifier-1", ledger.UpdateRejected{JobID: wjob, Round: 1, UpdateDigest: wu.UpdateDigest, Reason: "late", Step: 1},
			"verdict window ended", "stays unverified")
	})

	// A job whose draw leaves an update out: a verdict for it is refused.
	rare := recipe(ledger.MinFraction)
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: "adv-rare", Recipe: rare})
	o := open("adv-rare", rare, 1, r.base, "trainer-2")
	r.must(t, ctx, "coordinator", o)
	b := submit("adv-rare", o, "trainer-2")
	r.must(t, ctx, "trainer-2", b)
	r.must(t, ctx, "coordinator", ledger.SubmissionsClosed{JobID: "adv-rare", Round: 1})
	t.Run("verdict for an update the draw left out", func(t *testing.T) {
		r.attack(t, ctx, "verifier-1", ledger.UpdateVerified{JobID: "adv-rare", Round: 1, UpdateDigest: b.UpdateDigest}, "was not drawn for a spot check")
	})

	// A job with three verifiers and a quorum of 2: verifier-3 lies,
	// rejecting trainer-2's honest update. Its lone rejection is recorded
	// but rejects nothing; a second verdict from it is refused; the update
	// passes on the two honest verifiers' passes and the round commits.
	// trainer-3's forged update is rejected once two verifiers name the
	// same step.
	qr := recipe(1)
	qr.Verify.By = []string{ids["verifier-1"], ids["verifier-2"], ids["verifier-3"]}
	qr.Verify.Quorum = 2
	const qjob = "adv-quorum"
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: qjob, Recipe: qr})
	qo := open(qjob, qr, 1, r.base, "trainer-2", "trainer-3")
	r.must(t, ctx, "coordinator", qo)
	qb := submit(qjob, qo, "trainer-2")
	r.must(t, ctx, "trainer-2", qb)
	q3 := submit(qjob, qo, "trainer-3")
	r.must(t, ctx, "trainer-3", q3)
	r.must(t, ctx, "coordinator", ledger.SubmissionsClosed{JobID: qjob, Round: 1})
	// trainer-3's update: rejections naming different steps do not add
	// up; the second one naming step 2 rejects it.
	reject3 := func(step uint64) ledger.UpdateRejected {
		return ledger.UpdateRejected{JobID: qjob, Round: 1, UpdateDigest: q3.UpdateDigest, Reason: fmt.Sprintf("spot check: step %d differs", step), Step: step}
	}
	r.must(t, ctx, "verifier-3", reject3(1))
	r.must(t, ctx, "verifier-1", reject3(2))
	if rd, err := c.Round(ctx, qjob, 1); err != nil {
		t.Fatal(err)
	} else if u := rd.Updates[slices.IndexFunc(rd.Updates, func(u ledger.Update) bool { return u.UpdateDigest == q3.UpdateDigest })]; u.Rejected {
		t.Fatalf("rejections naming steps 1 and 2 rejected the update under quorum 2: %+v", u)
	}
	r.must(t, ctx, "verifier-2", reject3(2))
	qcommit := ledger.RoundCommitted{JobID: qjob, Round: 1, ModelDigest: digestOf("quorum model"), Strategy: "fedavg", Params: qr.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: nw.ID("trainer-2"), UpdateDigest: qb.UpdateDigest, Weight: 1}}}
	qverified := ledger.UpdateVerified{JobID: qjob, Round: 1, UpdateDigest: qb.UpdateDigest}
	qupdate := func(t *testing.T) ledger.Update {
		t.Helper()
		rd, err := c.Round(ctx, qjob, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range rd.Updates {
			if u.UpdateDigest == qb.UpdateDigest {
				return u
			}
		}
		t.Fatalf("round 1 of %s has no update %s", qjob, qb.UpdateDigest)
		return ledger.Update{}
	}
	r.must(t, ctx, "verifier-3", ledger.UpdateRejected{JobID: qjob, Round: 1, UpdateDigest: qb.UpdateDigest, Reason: "spot check: step 1 differs (a lie)", Step: 1})
	if u := qupdate(t); u.Rejected || u.VerifiedBy != "" || len(u.Verdicts) != 1 || u.Verdicts[0].Verifier != ids["verifier-3"] || u.Verdicts[0].Step != 1 {
		t.Fatalf("after one lying rejection under quorum 2: %+v; want it recorded and the update unsettled", u)
	}
	t.Run("lying verifier's second verdict", func(t *testing.T) {
		r.attack(t, ctx, "verifier-3", ledger.UpdateRejected{JobID: qjob, Round: 1, UpdateDigest: qb.UpdateDigest, Reason: "again", Step: 1},
			"already gave its verdict", "one verdict per verifier")
	})
	t.Run("lying verifier changing its verdict", func(t *testing.T) {
		r.attack(t, ctx, "verifier-3", qverified, "already gave its verdict")
	})
	r.must(t, ctx, "verifier-1", qverified)
	t.Run("commit on one pass of a quorum of 2", func(t *testing.T) {
		r.attack(t, ctx, "aggregator", qcommit, "no verifier of job", "has passed it")
	})
	r.must(t, ctx, "verifier-2", qverified)
	if u := qupdate(t); u.Rejected || u.VerifiedBy != ids["verifier-2"] || len(u.Verdicts) != 3 || u.Agreeing(true, 0) != 2 {
		t.Fatalf("after two passes under quorum 2: %+v; want the update passed", u)
	}
	if rd, err := c.Round(ctx, qjob, 1); err != nil {
		t.Fatal(err)
	} else if u := rd.Updates[slices.IndexFunc(rd.Updates, func(u ledger.Update) bool { return u.UpdateDigest == q3.UpdateDigest })]; !u.Rejected || u.RejectStep != 2 || u.RejectedBy != ids["verifier-2"] {
		t.Fatalf("two rejections naming step 2 under quorum 2: %+v; want the update rejected at step 2", u)
	}
	r.must(t, ctx, "aggregator", qcommit)
	t.Run("round 2 selects the trainer the liar rejected", func(t *testing.T) {
		r.must(t, ctx, "coordinator", open(qjob, qr, 2, digestOf("quorum model"), "trainer-2"))
	})

	// Rounds of a job may overlap: round 2 selects trainer-3 before the
	// verifier's rejection in round 1 suspends it. The suspension still
	// keeps its update out of round 2.
	const ojob = "adv-overlap"
	ovr := recipe(1)
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: ojob, Recipe: ovr})
	oo1 := open(ojob, ovr, 1, r.base, "trainer-3")
	r.must(t, ctx, "coordinator", oo1)
	ou1 := submit(ojob, oo1, "trainer-3")
	r.must(t, ctx, "trainer-3", ou1)
	r.must(t, ctx, "coordinator", ledger.SubmissionsClosed{JobID: ojob, Round: 1})
	oo2 := open(ojob, ovr, 2, r.base, "trainer-2", "trainer-3")
	r.must(t, ctx, "coordinator", oo2)
	r.must(t, ctx, "verifier-1", ledger.UpdateRejected{JobID: ojob, Round: 1, UpdateDigest: ou1.UpdateDigest, Reason: "spot check: step 1 differs", Step: 1})
	t.Run("suspended trainer submitting to a round opened before its suspension", func(t *testing.T) {
		b := submit(ojob, oo2, "trainer-3")
		b.UpdateDigest = digestOf("adv-overlap round 2 update of trainer-3")
		r.attack(t, ctx, "trainer-3", b, "is suspended from job", "for the rest of the job")
	})
}

// spotSteps is verify.steps of TestAttackSpotChecks' jobs.
const spotSteps = 2

// disclosedCommitment is a training commitment of steps steps for update
// that discloses every step's digest.
func disclosedCommitment(t *testing.T, update string, steps int) *ledger.TrainingCommitment {
	t.Helper()
	ds := make([]string, steps)
	for i := range ds {
		ds[i] = digestOf(fmt.Sprintf("%s step %d", update, i+1))
	}
	root, err := ledger.StepDigestsRoot(ds)
	if err != nil {
		t.Fatal(err)
	}
	return &ledger.TrainingCommitment{InputsDigest: digestOf("inputs of " + update), Steps: uint64(steps), StepRoot: root, StepDigests: ds}
}
