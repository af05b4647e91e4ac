package fsm

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/ledger"
)

func piiPredicate(pass bool) ledger.AttestationPredicate {
	p := ledger.AttestationPredicate{Kind: ledger.KindPIIScan, Result: ledger.AttestationResult{Pass: true, Samples: 100},
		Tool: ledger.AttestationTool{Name: "fedtune dataset scan", Digest: digest("fedtune binary")}, Report: digest("report")}
	if !pass {
		p.Result.Pass, p.Result.Findings, p.Result.Counts = false, 2, map[string]uint64{"email": 2}
	}
	return p
}

// attested returns a DatasetAttested of dataset whose statement key signs.
func attested(t testing.TB, key ed25519.PrivateKey, dataset string, pass bool) ledger.DatasetAttested {
	t.Helper()
	p := piiPredicate(pass)
	st, err := ledger.SignStatement(key, ledger.NewStatement(dataset, "data", p))
	if err != nil {
		t.Fatal(err)
	}
	return ledger.DatasetAttested{Dataset: dataset, Predicate: p, Statement: st}
}

func wantRejected(t *testing.T, ch *chain, code ledger.Code, want string, tx []byte) {
	t.Helper()
	res := ch.propose(tx)
	err := res.Results[0].Err
	if err == nil || !errors.Is(err, &ledger.TxError{Code: code}) || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %s containing %q", err, code, want)
	}
}

func TestDatasetAttested(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx := c.setupRound(t, ch)
	d := fx.datasets[0]

	stranger := newActor("stranger", ledger.RoleAuditor)
	forged := attested(t, c.auditor.key, d, true)
	e, _ := dsse.Decode(forged.Statement)
	fe := dsse.Sign(c.admin.key, e.PayloadType, e.Payload)
	fe.Signatures[0].KeyID = c.auditor.id
	forged.Statement = fe.Encode()
	other := attested(t, newActor("auditor-2", ledger.RoleAuditor).key, d, true)

	wantRejected(t, ch, ledger.CodeUnknownSigner, "is not a member", stranger.sign(t, attested(t, stranger.key, d, true)))
	wantRejected(t, ch, ledger.CodeForbidden, "DatasetAttested needs role auditor", c.trainers[0].sign(t, attested(t, c.trainers[0].key, d, true)))
	wantRejected(t, ch, ledger.CodeNotFound, "is not a registered dataset", c.auditor.sign(t, attested(t, c.auditor.key, digest("no such data"), true)))
	wantRejected(t, ch, ledger.CodeBadSignature, "attestation signature", c.auditor.sign(t, forged))
	wantRejected(t, ch, ledger.CodeBadSignature, "is signed by key", c.auditor.sign(t, other))

	good := c.auditor.sign(t, attested(t, c.auditor.key, d, true))
	ch.mustApply(good)
	wantRejected(t, ch, ledger.CodeDuplicate, "already on the chain", good)
	// Replay of the statement of dataset 0 as an attestation of dataset 1.
	replay := attested(t, c.auditor.key, d, true)
	replay.Dataset = fx.datasets[1]
	if _, err := ledger.SignTx(c.auditor.key, testChain, 99, replay); err == nil || !strings.Contains(err.Error(), "the statement is about dataset") {
		t.Fatalf("SignTx of a replayed statement: %v", err)
	}

	got, err := ch.fsm.Dataset(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Attestations) != 1 || got.Attestations[0].Auditor != c.auditor.id || !got.Attestations[0].Result.Pass || got.Attestations[0].Kind != ledger.KindPIIScan {
		t.Fatalf("attestations %+v", got.Attestations)
	}
	// A later attestation by the same auditor replaces the earlier one.
	ch.mustApply(c.auditor.sign(t, attested(t, c.auditor.key, d, false)))
	if got, _ := ch.fsm.Dataset(d); len(got.Attestations) != 1 || got.Attestations[0].Result.Pass {
		t.Fatalf("after a failing attestation: %+v", got.Attestations)
	}
	if got, _ := ch.fsm.Dataset(fx.datasets[1]); len(got.Attestations) != 0 {
		t.Fatalf("dataset 1 has attestations %+v", got.Attestations)
	}
}

// TestRequiredAttestations: a commit that counts an update on a dataset
// without the attestation its job requires is refused; after the
// attestation it is accepted, and the lineage shows the attestation, then
// the lack once the auditor's later attestation fails.
func TestRequiredAttestations(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	base := digest("base model")
	d := digest("dataset a")
	tr := c.trainers[0]
	rc := c.testRecipe()
	rc.RequireAttestations = []ledger.AttestationRequirement{{Kind: ledger.KindPIIScan, By: c.auditor.id}}
	ch.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: base, Name: "m", Licence: "apache-2.0", Source: "s"}),
		tr.sign(t, ledger.DatasetRegistered{Digest: d, Name: "a", Licence: "cc0-1.0", Source: "s", Samples: 100, Root: testDatasetRoot}),
		c.coord.sign(t, ledger.JobRegistered{JobID: "job-a", Recipe: rc}))
	ch.mustApply(c.coord.sign(t, ledger.RoundOpened{JobID: "job-a", Round: 1, ConfigDigest: digest("cfg"), BaseModel: base, Strategy: "fedavg",
		Trainers: []string{tr.id}, Deadline: t0.Add(24 * time.Hour)}))
	ch.mustApply(tr.sign(t, ledger.UpdateSubmitted{JobID: "job-a", Round: 1, UpdateDigest: digest("u1"), DatasetDigest: d, Samples: 100}))
	commit := ledger.RoundCommitted{JobID: "job-a", Round: 1, ModelDigest: digest("m1"), Strategy: "fedavg", Params: rc.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: tr.id, UpdateDigest: digest("u1"), Weight: 1}}}
	wantRejected(t, ch, ledger.CodeInvalid, "lacks the attestation(s) job \"job-a\" requires: pii-scan by "+c.auditor.id, c.agg.sign(t, commit))
	// A failing attestation does not meet the requirement.
	ch.mustApply(c.auditor.sign(t, attested(t, c.auditor.key, d, false)))
	wantRejected(t, ch, ledger.CodeInvalid, "lacks the attestation", c.agg.sign(t, commit))
	ch.mustApply(c.auditor.sign(t, attested(t, c.auditor.key, d, true)))
	ch.mustApply(c.agg.sign(t, commit))

	l, err := ch.fsm.Lineage(digest("m1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Datasets) != 1 || len(l.Datasets[0].Attestations) != 1 || !l.Datasets[0].Attestations[0].Result.Pass || len(l.Missing) != 0 {
		t.Fatalf("lineage datasets %+v missing %+v", l.Datasets, l.Missing)
	}
	ch.mustApply(c.auditor.sign(t, attested(t, c.auditor.key, d, false)))
	l, err = ch.fsm.Lineage(digest("m1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Missing) != 1 || l.Missing[0].Dataset != d || l.Missing[0].JobID != "job-a" || l.Missing[0].Requirement.Kind != ledger.KindPIIScan {
		t.Fatalf("missing %+v", l.Missing)
	}
}

// TestRequiredAttestationsMixed: a trainer mixing its own data with a
// published dataset's ranges trains on both, so a commit counting its
// update needs the job's attestation on each; the refusal names the
// dataset that lacks it.
func TestRequiredAttestationsMixed(t *testing.T) {
	const own, pub = "own", "pub"
	for name, tc := range map[string]struct {
		attest map[string]bool // dataset -> a passing (true) or failing attestation
		want   string          // "" commits; else the refused dataset
	}{
		"both attested":           {map[string]bool{own: true, pub: true}, ""},
		"published not attested":  {map[string]bool{own: true}, pub},
		"published attest fails":  {map[string]bool{own: true, pub: false}, pub},
		"own not attested":        {map[string]bool{pub: true}, own},
		"neither attested":        {nil, own},
		"published attested only": {map[string]bool{pub: true, own: false}, own},
	} {
		t.Run(name, func(t *testing.T) {
			c := newCast()
			ch := newChain(t, c.genesis(t), c.node.id)
			a, b := c.trainers[0], c.trainers[1]
			sm, err := dspub.Decode([]byte(testPublication(t, a.key, a.id, "pub-mixed", "CC-BY-4.0")), nil)
			if err != nil {
				t.Fatal(err)
			}
			ds := map[string]string{own: digest("b's own data"), pub: sm.Digest}
			base := digest("base model")
			rc := c.testRecipe()
			rc.RequireAttestations = []ledger.AttestationRequirement{{Kind: ledger.KindPIIScan, By: c.auditor.id}}
			rc.Published = []ledger.PublishedRef{{Digest: sm.Digest, Samples: sm.Samples}}
			rc.RangeSeed, rc.RangeSamples = 7, 1
			ch.mustApply(a.sign(t, ledger.DatasetPublished{Manifest: testPublication(t, a.key, a.id, "pub-mixed", "CC-BY-4.0")}),
				c.coord.sign(t, ledger.ModelRegistered{Digest: base, Name: "m", Licence: "apache-2.0", Source: "s"}),
				b.sign(t, ledger.DatasetRegistered{Digest: ds[own], Name: "b", Licence: "cc0-1.0", Source: "s", Samples: 100, Root: testDatasetRoot}),
				c.coord.sign(t, ledger.JobRegistered{JobID: "job-m", Recipe: rc}))
			ranges, err := rc.Ranges(1, []string{b.id})
			if err != nil {
				t.Fatal(err)
			}
			ch.mustApply(c.coord.sign(t, ledger.RoundOpened{JobID: "job-m", Round: 1, ConfigDigest: digest("cfg"), BaseModel: base, Strategy: "fedavg",
				Trainers: []string{b.id}, Deadline: t0.Add(24 * time.Hour), Ranges: ranges}))
			ch.mustApply(b.sign(t, ledger.UpdateSubmitted{JobID: "job-m", Round: 1, UpdateDigest: digest("u1"), DatasetDigest: ds[own], Samples: 10,
				Ranges: ledger.RangesOf(ranges, b.id)}))
			for _, k := range []string{own, pub} {
				if pass, ok := tc.attest[k]; ok {
					ch.mustApply(c.auditor.sign(t, attested(t, c.auditor.key, ds[k], pass)))
				}
			}
			commit := c.agg.sign(t, ledger.RoundCommitted{JobID: "job-m", Round: 1, ModelDigest: digest("m1"), Strategy: "fedavg", Params: rc.CommitParams(),
				Contributors: []ledger.Contribution{{Trainer: b.id, UpdateDigest: digest("u1"), Weight: 1}}})
			if tc.want != "" {
				wantRejected(t, ch, ledger.CodeInvalid, "computed on dataset "+ds[tc.want]+", which lacks the attestation(s) job \"job-m\" requires: pii-scan by "+c.auditor.id, commit)
				if r, err := ch.fsm.Round("job-m", 1); err != nil || r.Status == ledger.StatusCommitted {
					t.Fatalf("round after the refused commit: %+v, %v", r, err)
				}
				return
			}
			ch.mustApply(commit)
			l, err := ch.fsm.Lineage(digest("m1"))
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Missing) != 0 {
				t.Fatalf("lineage missing %+v", l.Missing)
			}
		})
	}
}
