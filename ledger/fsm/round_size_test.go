package fsm

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// TestRoundLeavesOutStepDigests: a round whose updates each disclose
// MaxDisclosedSteps step digests (≈ 262 KiB an update) reads back small
// (its size does not grow with disclosed steps, so a round of thousands
// of trainers stays under a client's message limit), and the per-update
// read (the update's tx, UpdateStepDigests) returns every digest.
func TestRoundLeavesOutStepDigests(t *testing.T) {
	// A full disclosure's tx (≈ 360 KiB) is over the default policy's
	// max_tx_bytes; a genesis may raise it up to MaxEnvelopeBytes.
	fx := newSpotFixtureWith(t, "spot", ledger.VerifyRule{Fraction: 1, SuspendRounds: 1, Steps: ledger.MaxDisclosedSteps}, func(g *ledger.Genesis) { g.Policy.MaxTxBytes = ledger.MaxEnvelopeBytes })
	c, ch := fx.c, fx.ch
	open := fx.open(t, "spot", 1, digest("spot base"), c.trainers)
	ch.mustApply(c.coord.sign(t, open))
	disclosed := map[string][]string{}
	envelopes := 0
	for _, tr := range c.trainers {
		steps := ledger.MaxDisclosedSteps
		ds := make([]string, steps)
		for s := range ds {
			ds[s] = digest(fmt.Sprintf("%s step %d", tr.name, s+1))
		}
		root, err := ledger.StepDigestsRoot(ds)
		if err != nil {
			t.Fatal(err)
		}
		mine := ledger.RangesOf(open.Ranges, tr.id)
		tx := tr.sign(t, ledger.UpdateSubmitted{JobID: "spot", Round: 1, UpdateDigest: digest("update " + tr.name), DatasetDigest: fx.ds,
			Samples: mine[0].Size(), Ranges: mine,
			Commitment: &ledger.TrainingCommitment{InputsDigest: digest("inputs"), Steps: uint64(steps), StepRoot: root, StepDigests: ds}})
		ch.mustApply(tx)
		disclosed[tr.id] = ds
		envelopes += len(tx)
	}
	r, err := ch.fsm.Round("spot", 1)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	// Three updates' records without digests are a few KiB; with them the
	// reply would be about as large as their txs (> 512 KiB).
	if len(js) > 8<<10 || envelopes < 3*ledger.MaxDisclosedSteps*64 {
		t.Fatalf("round JSON is %d bytes for updates whose txs are %d bytes; want it under 8 KiB", len(js), envelopes)
	}
	t.Logf("round JSON %d bytes; its updates' txs %d bytes", len(js), envelopes)
	if len(r.Updates) != len(c.trainers) {
		t.Fatalf("round has %d updates, want %d", len(r.Updates), len(c.trainers))
	}
	for i := range r.Updates {
		u := &r.Updates[i]
		if u.Commitment == nil || u.Commitment.StepDigests != nil {
			t.Fatalf("update of %s: commitment %+v; want one without step digests", u.Trainer[:8], u.Commitment)
		}
		rec := txOf(t, ch, u)
		got, err := ledger.UpdateStepDigests(rec.Envelope, "spot", 1, u)
		if err != nil {
			t.Fatalf("update of %s: %v", u.Trainer[:8], err)
		}
		if !slices.Equal(got, disclosed[u.Trainer]) {
			t.Fatalf("update of %s: read %d step digests, want the %d it disclosed", u.Trainer[:8], len(got), len(disclosed[u.Trainer]))
		}
		if root, err := ledger.StepDigestsRoot(got); err != nil || root != u.Commitment.StepRoot {
			t.Fatalf("update of %s: digests hash to %s (%v), not the step root %s", u.Trainer[:8], root, err, u.Commitment.StepRoot)
		}
	}

	// Another update's tx, or the right tx read as another round's, is
	// not taken for this update's.
	u0, u1 := r.Updates[0], r.Updates[1]
	other := txOf(t, ch, &u1).Envelope
	for _, tc := range []struct {
		name     string
		envelope []byte
		job      string
		round    uint64
		u        ledger.Update
		want     string
	}{
		{"another update's tx", other, "spot", 1, u0, "is not the update's tx"},
		{"the tx under another trainer's record", other, "spot", 1, func() ledger.Update { u := u0; u.TxHash = u1.TxHash; return u }(), "of signer"},
		{"another round", txOf(t, ch, &u0).Envelope, "spot", 2, u0, "not to round 2"},
		{"another step root", txOf(t, ch, &u0).Envelope, "spot", 1, func() ledger.Update {
			u := u0
			cm := *u.Commitment
			cm.StepRoot = digest("other root")
			u.Commitment = &cm
			return u
		}(), "commits to step root"},
		{"the round shows no commitment", txOf(t, ch, &u0).Envelope, "spot", 1, func() ledger.Update { u := u0; u.Commitment = nil; return u }(), "disagree"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ledger.UpdateStepDigests(tc.envelope, tc.job, tc.round, &tc.u); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// txOf reads update u's tx from the chain by its hash.
func txOf(t *testing.T, ch *chain, u *ledger.Update) *ledger.TxRecord {
	t.Helper()
	var h [32]byte
	b, err := hex.DecodeString(u.TxHash)
	if err != nil || len(b) != len(h) {
		t.Fatalf("update of %s: tx hash %q", u.Trainer[:8], u.TxHash)
	}
	copy(h[:], b)
	rec, err := ch.fsm.Tx(h)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
