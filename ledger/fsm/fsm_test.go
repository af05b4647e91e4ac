package fsm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedtune/fedtune/ledger"
)

// fullRound runs one whole round: three updates, one rejected, a commit.
func fullRound(t *testing.T, c *cast, ch *chain) (roundFixture, string) {
	t.Helper()
	c.clip = 10
	fx := c.setupRound(t, ch)
	ua, ub, uc := digest("update a"), digest("update b"), digest("update c")
	ch.mustApply(fx.submit(t, c.trainers[0], 0, 1, ua), fx.submit(t, c.trainers[1], 1, 1, ub), fx.submit(t, c.trainers[2], 2, 1, uc))
	ch.mustApply(c.agg.sign(t, ledger.UpdateRejected{JobID: fx.job, Round: 1, UpdateDigest: uc, Reason: "norm 1e9 above bound 10"}))
	newModel := digest("model after round 1")
	ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: fx.job, Round: 1, ModelDigest: newModel, Strategy: "fedavg",
		Params:       map[string]string{"clip": "10"},
		Contributors: []ledger.Contribution{{Trainer: c.trainers[0].id, UpdateDigest: ua, Weight: 0.5}, {Trainer: c.trainers[1].id, UpdateDigest: ub, Weight: 0.5}}}))
	return fx, newModel
}

func TestRoundLifecycle(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx, newModel := fullRound(t, c, ch)
	f := ch.fsm

	if got := f.Height(); got != 5 {
		t.Fatalf("height %d, want 5", got)
	}
	r, err := f.Round(fx.job, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != ledger.StatusCommitted || r.ModelDigest != newModel || len(r.Updates) != 3 || len(r.Contributors) != 2 {
		t.Fatalf("round = %+v", r)
	}
	rejected := 0
	for _, u := range r.Updates {
		if u.Rejected {
			rejected++
			if u.RejectReason == "" || u.RejectedBy != c.agg.id {
				t.Errorf("rejected update %+v", u)
			}
		}
	}
	if rejected != 1 {
		t.Errorf("%d rejected updates, want 1", rejected)
	}
	m, err := f.Model(newModel)
	if err != nil || m.Parent != fx.base || m.JobID != fx.job || m.Round != 1 {
		t.Fatalf("model %+v, %v", m, err)
	}
	lin, err := f.Lineage(newModel)
	if err != nil {
		t.Fatal(err)
	}
	if lin.Base.Digest != fx.base || lin.Base.Licence != "apache-2.0" || len(lin.Rounds) != 1 {
		t.Fatalf("lineage %+v", lin)
	}
	lr := lin.Rounds[0]
	if lr.ModelDigest != newModel || lr.BaseModel != fx.base || len(lr.Contributors) != 2 || len(lr.Rejected) != 1 || lr.Params["clip"] != "10" {
		t.Fatalf("lineage round %+v", lr)
	}
	if lr.Contributors[0].DatasetDigest != fx.datasets[0] || lr.Contributors[0].Weight != 0.5 || lr.Contributors[0].Samples != 100 {
		t.Fatalf("contribution %+v", lr.Contributors[0])
	}
	if len(lin.Datasets) != 2 {
		t.Fatalf("lineage datasets %+v", lin.Datasets)
	}
	if n, _ := f.Nonce(c.agg.id); n != c.agg.nonce {
		t.Errorf("aggregator nonce %d, want %d", n, c.agg.nonce)
	}
	if mem, err := f.Member(c.trainers[0].id); err != nil || mem.Role != ledger.RoleTrainer || !mem.Active {
		t.Errorf("member %+v, %v", mem, err)
	}
	if _, err := f.Model(digest("nothing")); !errors.Is(err, ledger.ErrRecordNotFound) {
		t.Errorf("unknown model: %v", err)
	}
	if _, err := f.Lineage(digest("nothing")); !errors.Is(err, ledger.ErrRecordNotFound) {
		t.Errorf("unknown lineage: %v", err)
	}
	base, err := f.Lineage(fx.base)
	if err != nil || len(base.Rounds) != 0 || base.Base.Digest != fx.base {
		t.Errorf("lineage of base %+v %v", base, err)
	}
	// Every tx on the chain is found with a proof that verifies.
	for h := uint64(1); h <= f.Height(); h++ {
		b, err := f.Block(h)
		if err != nil {
			t.Fatal(err)
		}
		for i, tx := range b.Txs {
			rec, err := f.Tx(ledger.TxHash(tx))
			if err != nil {
				t.Fatal(err)
			}
			if rec.Height != h || rec.Index != uint64(i) || !bytes.Equal(rec.Envelope, tx) || rec.BlockHash != b.Hash() {
				t.Fatalf("tx record %+v", rec)
			}
			if err := ledger.VerifyInclusion(rec.Hash, rec.Index, rec.TreeSize, rec.Proof, b.Header.TxRoot); err != nil {
				t.Fatalf("height %d tx %d: %v", h, i, err)
			}
		}
	}
	if err := VerifyChain(ch.db.State(), f.Genesis()); err != nil {
		t.Fatal(err)
	}
}

// TestRejections checks every class of bad transaction: rejected with the
// right code, by CheckTx and by Apply alike, with no block and no change to
// the state.
func TestRejections(t *testing.T) {
	stranger := newActor("stranger", ledger.RoleAdmin)
	type env struct {
		c  *cast
		ch *chain
		fx roundFixture
	}
	// Setups build on the standard round: job-1 round 1 open, all trainers selected.
	openRound := func(t *testing.T, e *env) { e.fx = e.c.setupRound(t, e.ch) }
	withUpdates := func(t *testing.T, e *env) {
		openRound(t, e)
		e.ch.mustApply(e.fx.submit(t, e.c.trainers[0], 0, 1, digest("ua")), e.fx.submit(t, e.c.trainers[1], 1, 1, digest("ub")))
	}
	committed := func(t *testing.T, e *env) {
		withUpdates(t, e)
		e.ch.mustApply(e.c.agg.sign(t, ledger.UpdateRejected{JobID: "job-1", Round: 1, UpdateDigest: digest("ub"), Reason: "late"}))
		e.ch.mustApply(e.c.agg.sign(t, ledger.RoundCommitted{JobID: "job-1", Round: 1, ModelDigest: digest("m1"), Strategy: "fedavg",
			Contributors: []ledger.Contribution{{Trainer: e.c.trainers[0].id, UpdateDigest: digest("ua"), Weight: 1}}}))
	}
	failed := func(t *testing.T, e *env) {
		withUpdates(t, e)
		e.ch.mustApply(e.c.agg.sign(t, ledger.RoundFailed{JobID: "job-1", Round: 1, Reason: "quorum not reached"}))
	}
	commit := func(e *env, update string) []byte {
		return e.c.agg.sign(e.ch.t, ledger.RoundCommitted{JobID: "job-1", Round: 1, ModelDigest: digest("m2"), Strategy: "fedavg",
			Contributors: []ledger.Contribution{{Trainer: e.c.trainers[0].id, UpdateDigest: update, Weight: 1}}})
	}
	reg := func(e *env, name string) []byte {
		return e.c.coord.sign(e.ch.t, ledger.ModelRegistered{Digest: digest(name), Name: name, Licence: "mit", Source: "x"})
	}
	cases := []struct {
		name  string
		setup func(*testing.T, *env)
		bad   func(*env) []byte
		code  ledger.Code
	}{
		{"malformed envelope", nil, func(e *env) []byte { return []byte(`{"payloadType":`) }, ledger.CodeMalformed},
		{"not canonical", nil, func(e *env) []byte { return append(reg(e, "a"), ' ') }, ledger.CodeMalformed},
		{"unknown field", nil, func(e *env) []byte {
			return []byte(`{"payloadType":"x","payload":"","signatures":[],"extra":1}`)
		}, ledger.CodeMalformed},
		{"bad signature", nil, func(e *env) []byte {
			en, _ := ledger.DecodeEnvelope(reg(e, "a"))
			en.Signatures[0].Sig[5] ^= 1
			return en.Encode()
		}, ledger.CodeBadSignature},
		{"payload changed after signing", nil, func(e *env) []byte {
			en, _ := ledger.DecodeEnvelope(reg(e, "a"))
			en.Payload = bytes.Replace(en.Payload, []byte(`"mit"`), []byte(`"gpl"`), 1)
			return en.Encode()
		}, ledger.CodeBadSignature},
		{"signature by another key", nil, func(e *env) []byte {
			en, _ := ledger.DecodeEnvelope(reg(e, "a"))
			other := ledger.SignEnvelope(e.c.agg.key, en.PayloadType, en.Payload)
			en.Signatures[0].Sig = other.Signatures[0].Sig
			return en.Encode()
		}, ledger.CodeBadSignature},
		{"unknown signer", nil, func(e *env) []byte {
			return stranger.sign(e.ch.t, ledger.MemberAdded{PublicKey: stranger.pubHex(), Role: ledger.RoleAdmin})
		}, ledger.CodeUnknownSigner},
		{"wrong chain", nil, func(e *env) []byte {
			b, _ := ledger.SignTx(e.c.coord.key, "other-chain", 1, ledger.ModelRegistered{Digest: digest("a"), Name: "a", Licence: "l", Source: "s"})
			return b
		}, ledger.CodeWrongChain},
		{"trainer opens round", nil, func(e *env) []byte {
			return e.c.trainers[0].sign(e.ch.t, ledger.RoundOpened{JobID: "j", Round: 1, ConfigDigest: digest("c"), BaseModel: digest("b"),
				Strategy: "fedavg", Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(time.Hour)})
		}, ledger.CodeForbidden},
		{"coordinator adds member", nil, func(e *env) []byte {
			return e.c.coord.sign(e.ch.t, ledger.MemberAdded{PublicKey: stranger.pubHex(), Role: ledger.RoleTrainer})
		}, ledger.CodeForbidden},
		{"auditor registers dataset", nil, func(e *env) []byte {
			return e.c.auditor.sign(e.ch.t, ledger.DatasetRegistered{Digest: digest("d"), Name: "d", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot})
		}, ledger.CodeForbidden},
		{"replayed nonce", func(t *testing.T, e *env) { e.ch.mustApply(reg(e, "first")) },
			func(e *env) []byte {
				return e.c.coord.signNonce(e.ch.t, e.c.coord.nonce, ledger.ModelRegistered{Digest: digest("b"), Name: "b", Licence: "l", Source: "s"})
			}, ledger.CodeBadNonce},
		{"old nonce", func(t *testing.T, e *env) { e.ch.mustApply(reg(e, "first"), reg(e, "second")) },
			func(e *env) []byte {
				return e.c.coord.signNonce(e.ch.t, 1, ledger.ModelRegistered{Digest: digest("c"), Name: "c", Licence: "l", Source: "s"})
			}, ledger.CodeBadNonce},
		{"replayed tx", nil, nil, ledger.CodeDuplicate}, // filled below
		{"update for unknown round", openRound, func(e *env) []byte { return e.fx.submit(e.ch.t, e.c.trainers[0], 0, 7, digest("u")) }, ledger.CodeNotFound},
		{"update for unknown job", openRound, func(e *env) []byte {
			fx := e.fx
			fx.job = "job-404"
			return fx.submit(e.ch.t, e.c.trainers[0], 0, 1, digest("u"))
		}, ledger.CodeNotFound},
		{"update after commit", committed, func(e *env) []byte { return e.fx.submit(e.ch.t, e.c.trainers[2], 2, 1, digest("uc")) }, ledger.CodeRoundNotOpen},
		{"update after fail", failed, func(e *env) []byte { return e.fx.submit(e.ch.t, e.c.trainers[2], 2, 1, digest("uc")) }, ledger.CodeRoundNotOpen},
		{"second update by a trainer", withUpdates, func(e *env) []byte { return e.fx.submit(e.ch.t, e.c.trainers[0], 0, 1, digest("ua2")) }, ledger.CodeAlreadyExists},
		{"update digest already submitted by another", withUpdates, func(e *env) []byte { return e.fx.submit(e.ch.t, e.c.trainers[2], 2, 1, digest("ua")) }, ledger.CodeAlreadyExists},
		{"reject twice", func(t *testing.T, e *env) {
			withUpdates(t, e)
			e.ch.mustApply(e.c.agg.sign(t, ledger.UpdateRejected{JobID: "job-1", Round: 1, UpdateDigest: digest("ub"), Reason: "NaN"}))
		}, func(e *env) []byte {
			return e.c.agg.sign(e.ch.t, ledger.UpdateRejected{JobID: "job-1", Round: 1, UpdateDigest: digest("ub"), Reason: "again"})
		}, ledger.CodeAlreadyExists},
		{"trainer rejects an update", withUpdates, func(e *env) []byte {
			return e.c.trainers[0].sign(e.ch.t, ledger.UpdateRejected{JobID: "job-1", Round: 1, UpdateDigest: digest("ub"), Reason: "spite"})
		}, ledger.CodeForbidden},
		{"coordinator commits", withUpdates, func(e *env) []byte {
			return e.c.coord.sign(e.ch.t, ledger.RoundCommitted{JobID: "job-1", Round: 1, ModelDigest: digest("m2"), Strategy: "fedavg",
				Contributors: []ledger.Contribution{{Trainer: e.c.trainers[0].id, UpdateDigest: digest("ua"), Weight: 1}}})
		}, ledger.CodeForbidden},
		{"commit listing a trainer twice", withUpdates, func(e *env) []byte {
			ct := ledger.Contribution{Trainer: e.c.trainers[0].id, UpdateDigest: digest("ua"), Weight: 1}
			return e.c.agg.sign(e.ch.t, ledger.RoundCommitted{JobID: "job-1", Round: 1, ModelDigest: digest("m2"), Strategy: "fedavg", Contributors: []ledger.Contribution{ct, ct}})
		}, ledger.CodeInvalid},
		{"update with another's dataset", openRound, func(e *env) []byte { return e.fx.submit(e.ch.t, e.c.trainers[0], 1, 1, digest("u")) }, ledger.CodeForbidden},
		{"update by unselected trainer", func(t *testing.T, e *env) {
			openRound(t, e)
			e.ch.mustApply(e.c.registerJob(t, "job-2"), e.c.coord.sign(t, ledger.RoundOpened{JobID: "job-2", Round: 1, ConfigDigest: digest("c"), BaseModel: e.fx.base,
				Strategy: "fedavg", Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(time.Hour)}))
		}, func(e *env) []byte {
			fx := e.fx
			fx.job = "job-2"
			return fx.submit(e.ch.t, e.c.trainers[1], 1, 1, digest("u"))
		}, ledger.CodeNotSelected},
		{"update after deadline", func(t *testing.T, e *env) {
			openRound(t, e)
			e.ch.clock = t0.Add(25 * time.Hour)
		}, func(e *env) []byte { return e.fx.submit(e.ch.t, e.c.trainers[0], 0, 1, digest("u")) }, ledger.CodeDeadlinePassed},
		{"double commit", committed, func(e *env) []byte { return commit(e, digest("ub")) }, ledger.CodeRoundNotOpen},
		{"commit after fail", failed, func(e *env) []byte { return commit(e, digest("ua")) }, ledger.CodeRoundNotOpen},
		{"commit naming unsubmitted update", withUpdates, func(e *env) []byte { return commit(e, digest("never sent")) }, ledger.CodeNotFound},
		{"commit naming rejected update", func(t *testing.T, e *env) {
			withUpdates(t, e)
			e.ch.mustApply(e.c.agg.sign(t, ledger.UpdateRejected{JobID: "job-1", Round: 1, UpdateDigest: digest("ua"), Reason: "NaN"}))
		}, func(e *env) []byte { return commit(e, digest("ua")) }, ledger.CodeInvalid},
		{"commit of unknown round", nil, func(e *env) []byte { return commit(e, digest("ua")) }, ledger.CodeNotFound},
		{"commit reusing a model digest", withUpdates, func(e *env) []byte {
			return e.c.agg.sign(e.ch.t, ledger.RoundCommitted{JobID: "job-1", Round: 1, ModelDigest: e.fx.base, Strategy: "fedavg",
				Contributors: []ledger.Contribution{{Trainer: e.c.trainers[0].id, UpdateDigest: digest("ua"), Weight: 1}}})
		}, ledger.CodeAlreadyExists},
		{"reject unknown update", openRound, func(e *env) []byte {
			return e.c.agg.sign(e.ch.t, ledger.UpdateRejected{JobID: "job-1", Round: 1, UpdateDigest: digest("zz"), Reason: "x"})
		}, ledger.CodeNotFound},
		{"round on unregistered model", committed, func(e *env) []byte {
			return e.c.coord.sign(e.ch.t, ledger.RoundOpened{JobID: "job-1", Round: 2, ConfigDigest: digest("c"), BaseModel: digest("nope"),
				Strategy: "fedavg", Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(time.Hour)})
		}, ledger.CodeNotFound},
		{"round opened twice", committed, func(e *env) []byte {
			return e.c.coord.sign(e.ch.t, ledger.RoundOpened{JobID: "job-1", Round: 1, ConfigDigest: digest("c"), BaseModel: e.fx.base,
				Strategy: "fedavg", Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(48 * time.Hour)})
		}, ledger.CodeAlreadyExists},
		{"round number going back", committed, func(e *env) []byte {
			return e.c.coord.sign(e.ch.t, ledger.RoundOpened{JobID: "job-1", Round: 0, ConfigDigest: digest("c"), BaseModel: e.fx.base,
				Strategy: "fedavg", Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(48 * time.Hour)})
		}, ledger.CodeInvalid},
		{"round selecting a non-trainer", openRound, func(e *env) []byte {
			return e.c.coord.sign(e.ch.t, ledger.RoundOpened{JobID: "job-1", Round: 2, ConfigDigest: digest("c"), BaseModel: e.fx.base,
				Strategy: "fedavg", Trainers: []string{e.c.agg.id}, Deadline: t0.Add(48 * time.Hour)})
		}, ledger.CodeInvalid},
		{"removed member signs", func(t *testing.T, e *env) {
			e.ch.mustApply(e.c.admin.sign(t, ledger.MemberRemoved{ID: e.c.coord.id, Reason: "left"}))
		}, func(e *env) []byte { return reg(e, "x") }, ledger.CodeUnknownSigner},
		{"remove last admin", nil, func(e *env) []byte {
			return e.c.admin.sign(e.ch.t, ledger.MemberRemoved{ID: e.c.admin.id})
		}, ledger.CodeInvalid},
		{"add existing member", nil, func(e *env) []byte {
			return e.c.admin.sign(e.ch.t, ledger.MemberAdded{PublicKey: e.c.coord.pubHex(), Role: ledger.RoleAuditor})
		}, ledger.CodeAlreadyExists},
		{"invalid body", nil, func(e *env) []byte {
			b := reg(e, "x")
			en, _ := ledger.DecodeEnvelope(b)
			// Re-sign a payload whose digest is not hex.
			p := bytes.Replace(en.Payload, []byte(digest("x")), []byte("zz"), 1)
			return ledger.SignEnvelope(e.c.coord.key, ledger.PayloadType, p).Encode()
		}, ledger.CodeInvalid},
		{"field over its limit", nil, func(e *env) []byte {
			en, _ := ledger.DecodeEnvelope(reg(e, "x"))
			p := bytes.Replace(en.Payload, []byte(`"source":"x"`), []byte(`"source":"`+string(bytes.Repeat([]byte("s"), ledger.MaxTextLen+1))+`"`), 1)
			return ledger.SignEnvelope(e.c.coord.key, ledger.PayloadType, p).Encode()
		}, ledger.CodeInvalid},
		{"evaluation by the aggregator", committed, func(e *env) []byte { return e.c.agg.sign(e.ch.t, evaluation(e.c, digest("m1"))) }, ledger.CodeForbidden},
		{"evaluation by a coordinator not the job's owner", func(t *testing.T, e *env) {
			committed(t, e)
			e.ch.mustApply(e.c.admin.sign(t, ledger.MemberAdded{PublicKey: stranger.pubHex(), Role: ledger.RoleCoordinator}))
		}, func(e *env) []byte {
			return stranger.sign(e.ch.t, evaluation(e.c, digest("m1")))
		}, ledger.CodeForbidden},
		{"evaluation of an open round", withUpdates, func(e *env) []byte { return e.c.coord.sign(e.ch.t, evaluation(e.c, digest("m1"))) }, ledger.CodeRoundNotOpen},
		{"evaluation of a failed round", failed, func(e *env) []byte { return e.c.coord.sign(e.ch.t, evaluation(e.c, digest("m1"))) }, ledger.CodeRoundNotOpen},
		{"evaluation of a round never opened", committed, func(e *env) []byte {
			ev := evaluation(e.c, digest("m1"))
			ev.Round = 2
			return e.c.coord.sign(e.ch.t, ev)
		}, ledger.CodeNotFound},
		{"evaluation of another model", committed, func(e *env) []byte { return e.c.coord.sign(e.ch.t, evaluation(e.c, digest("m2"))) }, ledger.CodeInvalid},
		{"evaluation twice", func(t *testing.T, e *env) {
			committed(t, e)
			e.ch.mustApply(e.c.coord.sign(t, evaluation(e.c, digest("m1"))))
		}, func(e *env) []byte {
			ev := evaluation(e.c, digest("m1"))
			ev.MeanNLL = 0.5
			return e.c.coord.sign(e.ch.t, ev)
		}, ledger.CodeAlreadyExists},
		{"evaluation scoring a rejected trainer", committed, func(e *env) []byte {
			ev := evaluation(e.c, digest("m1"))
			ev.Scores = append(ev.Scores, ledger.ContributionScore{Trainer: e.c.trainers[1].id, LossRemoved: 0.5})
			return e.c.coord.sign(e.ch.t, ev)
		}, ledger.CodeInvalid},
		{"evaluation with a NaN score", committed, func(e *env) []byte {
			en, _ := ledger.DecodeEnvelope(e.c.coord.sign(e.ch.t, evaluation(e.c, digest("m1"))))
			// JSON has no NaN: a payload that says so is malformed.
			p := bytes.Replace(en.Payload, []byte(`"loss_removed":0.25`), []byte(`"loss_removed":NaN`), 1)
			return ledger.SignEnvelope(e.c.coord.key, ledger.PayloadType, p).Encode()
		}, ledger.CodeMalformed},
		{"evaluation over no tokens", committed, func(e *env) []byte {
			en, _ := ledger.DecodeEnvelope(e.c.coord.sign(e.ch.t, evaluation(e.c, digest("m1"))))
			p := bytes.Replace(en.Payload, []byte(`"tokens":512`), []byte(`"tokens":0`), 1)
			return ledger.SignEnvelope(e.c.coord.key, ledger.PayloadType, p).Encode()
		}, ledger.CodeInvalid},
		{"evaluation with an overflowing loss", committed, func(e *env) []byte {
			en, _ := ledger.DecodeEnvelope(e.c.coord.sign(e.ch.t, evaluation(e.c, digest("m1"))))
			p := bytes.Replace(en.Payload, []byte(`"mean_nll":2.5`), []byte(`"mean_nll":1e999`), 1)
			return ledger.SignEnvelope(e.c.coord.key, ledger.PayloadType, p).Encode()
		}, ledger.CodeMalformed},
		{"over max_tx_bytes", nil, func(e *env) []byte {
			ids := make([]string, 5000)
			for i := range ids {
				ids[i] = digest(fmt.Sprint(i))
			}
			return e.c.coord.sign(e.ch.t, ledger.RoundOpened{JobID: "j", Round: 1, ConfigDigest: digest("c"), BaseModel: digest("b"),
				Strategy: "fedavg", Trainers: ids, Deadline: t0.Add(time.Hour)})
		}, ledger.CodeTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{c: newCast()}
			e.ch = newChain(t, e.c.genesis(t), e.c.node.id)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			var bad []byte
			if tc.bad == nil { // replayed tx: apply one, then send the same bytes again
				bad = reg(e, "dup")
				e.ch.mustApply(bad)
			} else {
				bad = tc.bad(e)
			}
			st := e.ch.db.State()
			before := dump(t, st, prefixApp)
			h, hash := e.ch.fsm.Head()

			checkErr := e.ch.fsm.CheckTx(bad)
			res := e.ch.propose(bad)
			if res.Block != nil {
				t.Fatalf("bad tx made block %d", res.Block.Header.Height)
			}
			for _, err := range []error{checkErr, res.Results[0].Err} {
				var te *ledger.TxError
				if !errors.As(err, &te) || te.Code != tc.code {
					t.Fatalf("got %v, want code %s", err, tc.code)
				}
				if !errors.Is(err, &ledger.TxError{Code: tc.code}) || te.Msg == "" {
					t.Fatalf("errors.Is fails for %v", err)
				}
			}
			t.Logf("%s: %v", tc.name, res.Results[0].Err)
			if after := dump(t, st, prefixApp); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("state changed:\nbefore %v\nafter  %v", before, after)
			}
			if h2, hash2 := e.ch.fsm.Head(); h2 != h || hash2 != hash {
				t.Fatalf("head moved from %d to %d", h, h2)
			}
			if _, err := e.ch.fsm.Tx(ledger.TxHash(bad)); tc.code != ledger.CodeDuplicate && !errors.Is(err, ledger.ErrRecordNotFound) {
				t.Fatalf("rejected tx is queryable: %v", err)
			}
		})
	}
}

// TestMixedProposal: invalid txs are left out, valid ones make the block.
func TestMixedProposal(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	good1 := c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m1"), Name: "m1", Licence: "l", Source: "s"})
	bad := c.trainers[0].sign(t, ledger.ModelRegistered{Digest: digest("m2"), Name: "m2", Licence: "l", Source: "s"})
	good2 := c.coord.sign(t, ledger.ModelRegistered{Digest: digest("m3"), Name: "m3", Licence: "l", Source: "s"})
	res := ch.propose(good1, bad, good1, good2)
	if res.Block == nil || len(res.Block.Txs) != 2 {
		t.Fatalf("block %v", res.Block)
	}
	if !bytes.Equal(res.Block.Txs[0], good1) || !bytes.Equal(res.Block.Txs[1], good2) {
		t.Fatal("block holds the wrong txs")
	}
	if !errors.Is(res.Results[1].Err, ledger.ErrForbidden) || !errors.Is(res.Results[2].Err, ledger.ErrDuplicate) || res.Results[0].Err != nil || res.Results[3].Err != nil {
		t.Fatalf("results %+v", res.Results)
	}
}

// TestReplicasAgree applies the same proposals to three FSMs on three
// stores: byte-identical blocks. A replayed proposal (same txs in a new log
// entry, as after a leader change) applies once; a replayed log index is
// skipped.
func TestReplicasAgree(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	chains := []*chain{newChain(t, g, c.node.id), newChain(t, g, c.node.id), newChain(t, g, c.node.id)}
	fx := c.setupRoundTxs(t)
	for i, p := range fx {
		var first []byte
		for j, ch := range chains {
			res := ch.propose(p...)
			if res.Block == nil {
				t.Fatalf("proposal %d: no block on replica %d", i, j)
			}
			enc := ledger.EncodeBlock(res.Block)
			if j == 0 {
				first = enc
			} else if !bytes.Equal(enc, first) {
				t.Fatalf("proposal %d: replica %d block differs", i, j)
			}
		}
	}
	last := fx[len(fx)-1]
	for _, ch := range chains {
		h := ch.fsm.Height()
		res := ch.propose(last...)
		if res.Block != nil || ch.fsm.Height() != h {
			t.Fatal("replayed proposal made a block")
		}
		for _, r := range res.Results {
			if !errors.Is(r.Err, ledger.ErrDuplicate) {
				t.Fatalf("replayed tx: %v", r.Err)
			}
		}
		// Raft replaying an entry already applied: skipped by index.
		out := ch.fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: proposalEntry(c.node.id, 1, fx[0])})
		if res := out.(*ApplyResult); !errors.Is(res.Err, ErrAlreadyApplied) {
			t.Fatalf("replayed index: %v", res.Err)
		}
		// Non-command entries are ignored.
		if out := ch.fsm.Apply(&raft.Log{Index: ch.index + 1, Type: raft.LogNoop}); out != nil {
			t.Fatalf("noop entry: %v", out)
		}
	}
}

// setupRoundTxs returns the proposals of a whole round, signed once.
func (c *cast) setupRoundTxs(t *testing.T) [][][]byte {
	base := digest("base")
	var props [][][]byte
	p1 := [][]byte{c.coord.sign(t, ledger.ModelRegistered{Digest: base, Name: "b", Licence: "l", Source: "s"})}
	var ids []string
	for i, tr := range c.trainers {
		ids = append(ids, tr.id)
		p1 = append(p1, tr.sign(t, ledger.DatasetRegistered{Digest: digest(fmt.Sprint("d", i)), Name: "d", Licence: "l", Source: "s", Samples: 5, Root: testDatasetRoot}))
	}
	props = append(props, p1)
	props = append(props, [][]byte{c.registerJob(t, "j"), c.coord.sign(t, ledger.RoundOpened{JobID: "j", Round: 1, ConfigDigest: digest("c"), BaseModel: base,
		Strategy: "fedavg", Trainers: ids, Deadline: t0.Add(time.Hour)})})
	var p3 [][]byte
	var contrib []ledger.Contribution
	for i, tr := range c.trainers {
		u := digest(fmt.Sprint("u", i))
		p3 = append(p3, tr.sign(t, ledger.UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: u, DatasetDigest: digest(fmt.Sprint("d", i)), Samples: 5}))
		contrib = append(contrib, ledger.Contribution{Trainer: tr.id, UpdateDigest: u, Weight: 1.0 / 3})
	}
	props = append(props, p3)
	props = append(props, [][]byte{c.agg.sign(t, ledger.RoundCommitted{JobID: "j", Round: 1, ModelDigest: digest("new"), Strategy: "fedavg", Contributors: contrib})})
	return props
}

func TestBlockTimeMonotonic(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	b1 := ch.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: digest("1"), Name: "1", Licence: "l", Source: "s"}))
	// A proposer whose clock is behind: the block time is forced to prev+1.
	res := ch.proposeAt(b1.Header.Time-int64(time.Hour), c.coord.sign(t, ledger.ModelRegistered{Digest: digest("2"), Name: "2", Licence: "l", Source: "s"}))
	if res.Block.Header.Time != b1.Header.Time+1 {
		t.Fatalf("time %d, want %d", res.Block.Header.Time, b1.Header.Time+1)
	}
	ahead := b1.Header.Time + int64(20*time.Second) // within policy max_clock_skew of the replica clock
	res = ch.proposeAt(ahead, c.coord.sign(t, ledger.ModelRegistered{Digest: digest("3"), Name: "3", Licence: "l", Source: "s"}))
	if res.Block.Header.Time != ahead {
		t.Fatalf("time %d, want %d", res.Block.Header.Time, ahead)
	}
}

func TestBlockLimits(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	g.Policy.MaxBlockTxs = 2
	ch := newChain(t, g, c.node.id)
	var txs [][]byte
	for i := 0; i < 3; i++ {
		txs = append(txs, c.coord.sign(t, ledger.ModelRegistered{Digest: digest(fmt.Sprint(i)), Name: "m", Licence: "l", Source: "s"}))
	}
	res := ch.propose(txs...)
	if len(res.Block.Txs) != 2 || !errors.Is(res.Results[2].Err, ledger.ErrTooLarge) {
		t.Fatalf("results %+v", res.Results)
	}
	// The left-out tx goes into the next block.
	ch.mustApply(txs[2])
}

func TestMembership(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	newbie := newActor("newbie", ledger.RoleTrainer)
	ch.mustApply(c.admin.sign(t, ledger.MemberAdded{PublicKey: newbie.pubHex(), Role: ledger.RoleTrainer, Name: "newbie"}))
	ch.mustApply(newbie.sign(t, ledger.DatasetRegistered{Digest: digest("nd"), Name: "n", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot}))
	ch.mustApply(c.admin.sign(t, ledger.MemberRemoved{ID: newbie.id, Reason: "left"}))
	if res := ch.propose(newbie.sign(t, ledger.DatasetRegistered{Digest: digest("nd2"), Name: "n", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot})); !errors.Is(res.Results[0].Err, ledger.ErrUnknownSigner) {
		t.Fatalf("removed member: %v", res.Results[0].Err)
	}
	// Re-added with another role; the nonce carries on, so old txs stay dead.
	ch.mustApply(c.admin.sign(t, ledger.MemberAdded{PublicKey: newbie.pubHex(), Role: ledger.RoleAuditor}))
	m, err := ch.fsm.Member(newbie.id)
	if err != nil || m.Role != ledger.RoleAuditor || !m.Active {
		t.Fatalf("member %+v %v", m, err)
	}
	if n, _ := ch.fsm.Nonce(newbie.id); n != 1 {
		t.Fatalf("nonce %d, want 1", n)
	}
	ms, err := ch.fsm.Members()
	if err != nil || len(ms) != 8 {
		t.Fatalf("members %d %v", len(ms), err)
	}
	// A second admin makes the first removable.
	admin2 := newActor("admin2", ledger.RoleAdmin)
	ch.mustApply(c.admin.sign(t, ledger.MemberAdded{PublicKey: admin2.pubHex(), Role: ledger.RoleAdmin}))
	ch.mustApply(admin2.sign(t, ledger.MemberRemoved{ID: c.admin.id}))
}

func TestReopenAndGenesisMismatch(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	ch := newChain(t, g, c.node.id)
	ch.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: digest("1"), Name: "1", Licence: "l", Source: "s"}))
	f2, err := New(ch.db.State(), g, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if h1, hash1 := ch.fsm.Head(); f2.Height() != h1 || f2.AppliedIndex() != ch.fsm.AppliedIndex() {
		t.Fatalf("reopened at %d, want %d (%x)", f2.Height(), h1, hash1)
	}
	other := c.genesis(t)
	other.ChainID = "another-chain"
	if _, err := New(ch.db.State(), other, Options{}); !errors.Is(err, ErrGenesisMismatch) {
		t.Fatalf("other genesis: %v", err)
	}
}

// memSink is a raft.SnapshotSink into memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// snapshotBytes persists an FSM snapshot of f (what raft would send a
// follower) into memory.
func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// restoreBytes restores f from snapshot bytes.
func restoreBytes(f *FSM, snap []byte) error { return f.Restore(nopCloser{bytes.NewReader(snap)}) }

func TestSnapshotRestore(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	a := newChain(t, g, c.node.id)
	_, model := fullRound(t, c, a)
	snap := snapshotBytes(t, a.fsm)

	b := newChain(t, g, c.node.id)
	b.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: digest("diverged"), Name: "x", Licence: "l", Source: "s"}))
	if err := restoreBytes(b.fsm, snap); err != nil {
		t.Fatal(err)
	}
	ha, hashA := a.fsm.Head()
	hb, hashB := b.fsm.Head()
	if ha != hb || hashA != hashB || a.fsm.AppliedIndex() != b.fsm.AppliedIndex() {
		t.Fatalf("restored head %d %x, want %d %x", hb, hashB, ha, hashA)
	}
	if fmt.Sprint(dump(t, a.db.State(), "")) != fmt.Sprint(dump(t, b.db.State(), "")) {
		t.Fatal("restored state differs")
	}
	if _, err := b.fsm.Lineage(model); err != nil {
		t.Fatal(err)
	}
	if err := VerifyChain(b.db.State(), g); err != nil {
		t.Fatal(err)
	}
	// Both go on identically.
	b.index, b.clock = a.index, a.clock
	tx := c.coord.sign(t, ledger.ModelRegistered{Digest: digest("after"), Name: "x", Licence: "l", Source: "s"})
	if x, y := a.mustApply(tx), b.mustApply(tx); !bytes.Equal(ledger.EncodeBlock(x), ledger.EncodeBlock(y)) {
		t.Fatal("blocks after restore differ")
	}
	// A corrupt snapshot is refused and leaves the state alone.
	before := dump(t, b.db.State(), "")
	bad := append([]byte(nil), snap...)
	bad[len(bad)/2] ^= 0xff
	if err := restoreBytes(b.fsm, bad); err == nil {
		t.Fatal("corrupt snapshot restored")
	}
	if fmt.Sprint(dump(t, b.db.State(), "")) != fmt.Sprint(before) {
		t.Fatal("failed restore changed the state")
	}
}

// TestQueriesDuringApply runs the queries while blocks are applied (run
// with -race).
func TestQueriesDuringApply(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx, model := fullRound(t, c, ch)
	// Signed here: the reader goroutine must not call t.Fatal.
	probe := c.coord.signNonce(t, 1<<40, ledger.ModelRegistered{Digest: digest("q"), Name: "q", Licence: "l", Source: "s"})
	done := make(chan struct{})
	// Deferred too, so a failed mustApply does not leave the reader
	// spinning a core for the rest of the package run.
	stopReader := sync.OnceFunc(func() { close(done) })
	defer stopReader()
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for {
			select {
			case <-done:
				return
			default:
			}
			h := ch.fsm.Height()
			b, err := ch.fsm.Block(h)
			if err == nil {
				_, err = ch.fsm.Tx(ledger.TxHash(b.Txs[0]))
			}
			if err == nil {
				_, err = ch.fsm.Lineage(model)
			}
			if err == nil {
				_, err = ch.fsm.Round(fx.job, 1)
			}
			if err == nil {
				err = ch.fsm.CheckTx(probe)
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	for i := 0; i < 30; i++ {
		ch.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: digest(fmt.Sprint("concurrent ", i)), Name: "m", Licence: "l", Source: "s"}))
	}
	stopReader()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestPrecheckSameOutcome: the parallel signature precheck gives the same
// blocks and results as sequential checking, also when a signer is added or
// removed within the block.
func TestPrecheckSameOutcome(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	par, seq := newChain(t, g, c.node.id), newChain(t, g, c.node.id)
	seq.fsm.noPrecheck = true
	newbie := newActor("newbie", ledger.RoleCoordinator)
	reg := func(a *actor, n string) []byte {
		return a.sign(t, ledger.ModelRegistered{Digest: digest(n), Name: n, Licence: "l", Source: "s"})
	}
	forged, _ := ledger.DecodeEnvelope(reg(c.coord, "forged"))
	forged.Signatures[0].Sig[9] ^= 4
	txs := [][]byte{
		reg(c.coord, "a"), reg(newbie, "before being added"),
		c.admin.sign(t, ledger.MemberAdded{PublicKey: newbie.pubHex(), Role: ledger.RoleCoordinator}),
		reg(newbie, "after being added"), forged.Encode(), reg(c.coord, "b"),
		c.admin.sign(t, ledger.MemberRemoved{ID: c.coord.id}), reg(c.coord, "after removal"),
		[]byte("garbage"), reg(c.trainers[0], "wrong role"), reg(c.coord, "b"),
	}
	rp, rs := par.propose(txs...), seq.propose(txs...)
	if !bytes.Equal(ledger.EncodeBlock(rp.Block), ledger.EncodeBlock(rs.Block)) {
		t.Fatal("blocks differ")
	}
	for i := range txs {
		if fmt.Sprint(rp.Results[i].Err) != fmt.Sprint(rs.Results[i].Err) {
			t.Fatalf("tx %d: parallel %v, sequential %v", i, rp.Results[i].Err, rs.Results[i].Err)
		}
	}
	if n := len(rp.Block.Txs); n != 5 {
		t.Fatalf("%d txs in block, want 5", n)
	}
}

// TestInferenceRole: an admin admits a member with role inference; it is an
// active member of that role, and it may sign no transaction.
func TestInferenceRole(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	node := newActor("infer", ledger.RoleInference)
	if res := ch.propose(c.coord.sign(t, ledger.MemberAdded{PublicKey: node.pubHex(), Role: ledger.RoleInference})); !errors.Is(res.Results[0].Err, ledger.ErrForbidden) {
		t.Fatalf("coordinator admitting an inference member: %v", res.Results[0].Err)
	}
	ch.mustApply(c.admin.sign(t, ledger.MemberAdded{PublicKey: node.pubHex(), Role: ledger.RoleInference, Name: "infer"}))
	m, err := ch.fsm.Member(node.id)
	if err != nil || m.Role != ledger.RoleInference || !m.Active {
		t.Fatalf("member %+v %v", m, err)
	}
	for _, body := range []ledger.TxBody{
		ledger.ModelRegistered{Digest: digest("im"), Name: "m", Licence: "l", Source: "s"},
		ledger.DatasetRegistered{Digest: digest("id"), Name: "n", Licence: "l", Source: "s", Samples: 1, Root: testDatasetRoot},
		ledger.MemberAdded{PublicKey: c.coord.pubHex(), Role: ledger.RoleInference},
	} {
		if res := ch.propose(node.sign(t, body)); !errors.Is(res.Results[0].Err, ledger.ErrForbidden) {
			t.Errorf("inference member signing %s: %v", body.TxType(), res.Results[0].Err)
		}
	}
	ch.mustApply(c.admin.sign(t, ledger.MemberRemoved{ID: node.id, Reason: "retired"}))
	if m, err := ch.fsm.Member(node.id); err != nil || m.Active || m.Role != ledger.RoleInference {
		t.Fatalf("removed member %+v %v", m, err)
	}
}

// evaluation is a RoundEvaluated of job-1 round 1 naming model, scoring
// the committed fixture's one contributor (trainer-a).
func evaluation(c *cast, model string) ledger.RoundEvaluated {
	return ledger.RoundEvaluated{JobID: "job-1", Round: 1, ModelDigest: model, EvalDigest: digest("eval set"), MeanNLL: 2.5, Tokens: 512,
		Scores: []ledger.ContributionScore{{Trainer: c.trainers[0].id, LossRemoved: 0.25}}}
}

// TestRoundEvaluated records a committed round's evaluation on its round
// record, as every replica reads it.
func TestRoundEvaluated(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx := c.setupRound(t, ch)
	ch.mustApply(fx.submit(t, c.trainers[0], 0, 1, digest("ua")))
	ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: "job-1", Round: 1, ModelDigest: digest("m1"), Strategy: "fedavg",
		Contributors: []ledger.Contribution{{Trainer: c.trainers[0].id, UpdateDigest: digest("ua"), Weight: 1}}}))
	env := c.coord.sign(t, evaluation(c, digest("m1")))
	b := ch.mustApply(env)
	r, err := ch.fsm.Round("job-1", 1)
	if err != nil {
		t.Fatal(err)
	}
	ev := r.Evaluation
	h := ledger.TxHash(env)
	if ev == nil || ev.MeanNLL != 2.5 || ev.Tokens != 512 || ev.EvalDigest != digest("eval set") || len(ev.Scores) != 1 ||
		ev.Scores[0] != (ledger.ContributionScore{Trainer: c.trainers[0].id, LossRemoved: 0.25}) || ev.Coordinator != c.coord.id ||
		ev.Height != b.Header.Height || ev.TxHash != hex.EncodeToString(h[:]) {
		t.Fatalf("evaluation %+v", ev)
	}
	l, err := ch.fsm.Lineage(digest("m1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Rounds) != 1 || l.Rounds[0].Eval == nil || l.Rounds[0].Eval.MeanNLL != 2.5 || l.Rounds[0].Eval.TxHash != ev.TxHash {
		t.Fatalf("lineage rounds %+v lack the evaluation", l.Rounds)
	}
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}
