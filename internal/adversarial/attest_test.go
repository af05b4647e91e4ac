package adversarial

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/ledger"
)

// attestPredicate is a passing pii-scan predicate.
func attestPredicate(t *testing.T) ledger.AttestationPredicate {
	return ledger.AttestationPredicate{Kind: ledger.KindPIIScan, Result: ledger.AttestationResult{Pass: true, Samples: 100,
		Counts: map[string]uint64{"email": 0}}, Tool: ledger.AttestationTool{Name: "fedtune dataset scan", Digest: exDigest(t)}, Report: exDigest(t)}
}

// attestBody is a DatasetAttested of dataset whose statement key signs.
func attestBody(t *testing.T, key ed25519.PrivateKey, dataset string) ledger.DatasetAttested {
	t.Helper()
	p := attestPredicate(t)
	st, err := ledger.SignStatement(key, ledger.NewStatement(dataset, "data", p))
	if err != nil {
		t.Fatal(err)
	}
	return ledger.DatasetAttested{Dataset: dataset, Predicate: p, Statement: st}
}

// rawTx signs a payload written by hand, so that a body SignTx would
// refuse (it checks bodies) reaches the ledger as an attacker would send it.
func rawTx(t *testing.T, key ed25519.PrivateKey, chainID string, nonce uint64, typ string, body any) []byte {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	payload := fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, chainID, ledger.KeyID(key.Public().(ed25519.PublicKey)), nonce, typ, b)
	return ledger.SignEnvelope(key, ledger.PayloadType, []byte(payload)).Encode()
}

// TestAttackDatasetAttested: the lies about a dataset's attestations a
// party could tell the ledger. Each is refused with its reason and leaves
// the chain as it was; the honest attestation is then recorded.
func TestAttackDatasetAttested(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	c := exNewChain(t, ctx, nw)
	s := exSetUp(c, "trainer-1", "trainer-2")
	aud := devnet.AuditorName
	d1, d2 := s.datasets["trainer-1"], s.datasets["trainer-2"]
	attack := func(name string, fn func(t *testing.T, c *exChain)) {
		t.Run(name, func(t *testing.T) {
			before := waitSettled(t, ctx, nw.Net)
			fn(t, c.on(t))
			requireUnchanged(t, ctx, nw.Net, before)
		})
	}

	attack("NonMember", func(t *testing.T, c *exChain) {
		key := newKey(t)
		env := exSignFor(t, key, nw.ChainID, 1, attestBody(t, key, d1))
		c.refused(0, env, ledger.CodeUnknownSigner, "signer "+ledger.KeyID(key.Public().(ed25519.PublicKey))+" is not a member")
	})
	attack("TrainerVouchesForItself", func(t *testing.T, c *exChain) {
		env := c.next("trainer-1", attestBody(t, nw.Keys["trainer-1"], d1))
		c.refused(1, env, ledger.CodeForbidden, "DatasetAttested needs role auditor", "is trainer")
	})
	attack("UnknownDataset", func(t *testing.T, c *exChain) {
		ghost := exDigest(t)
		env := c.next(aud, attestBody(t, nw.Keys[aud], ghost))
		c.refused(2, env, ledger.CodeNotFound, "dataset "+ghost+" is not a registered dataset")
	})
	attack("ForgedStatementSignature", func(t *testing.T, c *exChain) {
		// The statement names the auditor's key ID but another key signed it.
		b := attestBody(t, nw.Keys[aud], d1)
		e, err := dsse.Decode(b.Statement)
		if err != nil {
			t.Fatal(err)
		}
		forged := dsse.Sign(nw.Keys["trainer-1"], e.PayloadType, e.Payload)
		forged.Signatures[0].KeyID = nw.ID(aud)
		b.Statement = forged.Encode()
		c.refused(0, c.next(aud, b), ledger.CodeBadSignature, "attestation signature")
	})
	attack("SomeoneElsesStatement", func(t *testing.T, c *exChain) {
		// The coordinator's statement carried in the auditor's tx: the
		// statement must be the auditor's own.
		c.refused(1, c.next(aud, attestBody(t, nw.Keys["coordinator"], d1)), ledger.CodeBadSignature, "is signed by key "+nw.ID("coordinator"))
	})
	attack("ForgedTxSignature", func(t *testing.T, c *exChain) {
		env := c.next(aud, attestBody(t, nw.Keys[aud], d1))
		e, err := ledger.DecodeEnvelope(env)
		if err != nil {
			t.Fatal(err)
		}
		e.Signatures[0].Sig = ed25519.Sign(nw.Keys["trainer-2"], ledger.PAE(e.PayloadType, e.Payload))
		c.refused(2, e.Encode(), ledger.CodeBadSignature, "signature")
	})
	attack("ReplayForAnotherDataset", func(t *testing.T, c *exChain) {
		// The auditor's signed statement about dataset 1, carried by a tx
		// (here the auditor's own, hand-written) about dataset 2.
		b := attestBody(t, nw.Keys[aud], d1)
		b.Dataset = d2
		env := rawTx(t, nw.Keys[aud], nw.ChainID, c.nonces[aud]+1, ledger.TypeDatasetAttested, b)
		c.refused(0, env, ledger.CodeInvalid, "the statement is about dataset "+d1+", the tx names "+d2)
	})

	// A job that requires a pii-scan by the auditor: an aggregator that
	// commits an update on dataset 1 before the attestation is refused.
	const job = "attest-required"
	c.commit("coordinator", ledger.JobRegistered{JobID: job, Recipe: ledger.RoundRecipe{Strategy: "fedavg", Compression: "none",
		MinTrainers: 1, Aggregators: []string{nw.ID("aggregator")},
		RequireAttestations: []ledger.AttestationRequirement{{Kind: ledger.KindPIIScan, By: nw.ID(aud)}}}})
	s.registered[job] = true
	s.open(c, job, time.Now().Add(time.Hour), "trainer-1")
	upd := s.update(job, "trainer-1", exDigest(t))
	c.commit("trainer-1", upd)
	commit := ledger.RoundCommitted{JobID: job, Round: 1, ModelDigest: exDigest(t), Strategy: "fedavg", Params: map[string]string{},
		Contributors: []ledger.Contribution{{Trainer: nw.ID("trainer-1"), UpdateDigest: upd.UpdateDigest, Weight: 1}}}
	attack("CommitWithoutRequiredAttestation", func(t *testing.T, c *exChain) {
		c.refused(1, c.next("aggregator", commit), ledger.CodeInvalid, "dataset "+d1+", which lacks the attestation(s) job \""+job+"\" requires: pii-scan by "+nw.ID(aud))
	})

	// The honest attestation is recorded; replaying its tx changes nothing.
	env, h := c.commit(aud, attestBody(t, nw.Keys[aud], d1))
	// Now the same commit is accepted.
	c.commit("aggregator", commit)
	attack("ReplayedAttestation", func(t *testing.T, c *exChain) {
		if got, err := c.submit(1, env); err != nil || got != h {
			t.Fatalf("replay: height %d, %v; want the first copy's height %d", got, err, h)
		}
	})
	lc, err := nw.Ledger(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	for _, tc := range []struct {
		dataset string
		want    int
	}{{d1, 1}, {d2, 0}} {
		ds, err := lc.Dataset(ctx, tc.dataset)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds.Attestations) != tc.want {
			t.Fatalf("dataset %s has attestations %+v, want %d", tc.dataset, ds.Attestations, tc.want)
		}
	}
}
