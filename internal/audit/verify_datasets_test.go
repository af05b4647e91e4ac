package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/ledger"
)

// publishedChain is the test chain with trainer-1's data published
// (DatasetPublished, its shards and leaves in the artifacts) and attested
// by an auditor (DatasetAttested), the attestation alone in the last block.
type publishedChain struct {
	*testChain
	auditor *actor
	sm      *dspub.Signed
	pub     *datasets.Publication
	pred    ledger.AttestationPredicate
}

func newPublishedChain(t *testing.T) *publishedChain {
	t.Helper()
	c := &publishedChain{testChain: newTestChain(t), auditor: newActor("auditor", ledger.RoleAuditor)}
	c.apply(t, c.admin.sign(t, ledger.MemberAdded{PublicKey: hex.EncodeToString(c.auditor.pub()), Role: ledger.RoleAuditor, Name: "auditor"}))
	tr := c.trainers[0]
	var err error
	if c.pub, err = datasets.Publish(c.data[0], datasets.PublishOptions{Name: "arith", Format: dspub.FormatText, Licence: "CC-BY-4.0",
		Owner: tr.id, ShardSamples: 4}); err != nil {
		t.Fatal(err)
	}
	if c.sm, err = dspub.Sign(tr.key, &c.pub.Manifest); err != nil {
		t.Fatal(err)
	}
	put(t, c.artifacts, c.pub.Leaves, false)
	for _, sh := range c.pub.Shards {
		put(t, c.artifacts, sh, false)
	}
	c.apply(t, tr.sign(t, ledger.DatasetPublished{Manifest: string(c.sm.Envelope)}))
	c.pred = ledger.AttestationPredicate{Kind: ledger.KindPIIScan, Tool: ledger.AttestationTool{Name: "fedtune dataset scan", Digest: digest.Bytes([]byte("tool"))},
		Report: digest.Bytes([]byte("report")), Result: ledger.AttestationResult{Pass: true, Samples: c.sm.Samples}}
	c.apply(t, c.attestTx(t, c.auditor.key, c.pred, c.pred))
	return c
}

// attestTx is the auditor's DatasetAttested of the published dataset
// saying txPred, its statement signed by key and saying stPred.
func (c *publishedChain) attestTx(t *testing.T, key ed25519.PrivateKey, txPred, stPred ledger.AttestationPredicate) []byte {
	t.Helper()
	env, err := ledger.SignStatement(key, ledger.NewStatement(c.sm.Digest, "arith", stPred))
	if err != nil {
		t.Fatal(err)
	}
	return c.auditor.sign(t, ledger.DatasetAttested{Dataset: c.sm.Digest, Predicate: txPred, Statement: env})
}

// rawAttestTx is attestTx (statement by the auditor) written by hand, so
// that a tx SignTx would refuse (its statement says other than the tx)
// can be put in an export.
func (c *publishedChain) rawAttestTx(t *testing.T, txPred, stPred ledger.AttestationPredicate) []byte {
	t.Helper()
	env, err := ledger.SignStatement(c.auditor.key, ledger.NewStatement(c.sm.Digest, "arith", stPred))
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(ledger.DatasetAttested{Dataset: c.sm.Digest, Predicate: txPred, Statement: env})
	if err != nil {
		t.Fatal(err)
	}
	c.auditor.nonce++
	payload := fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, chainID, c.auditor.id, c.auditor.nonce, ledger.TypeDatasetAttested, body)
	return ledger.SignEnvelope(c.auditor.key, ledger.PayloadType, []byte(payload)).Encode()
}

// TestVerifyPublishedAndAttested: audit verify re-checks every
// DatasetAttested statement (signature, and that it says what the tx
// says) and every DatasetPublished manifest (signature, owner, the leaves'
// root, the shards) offline from an export; a forged one is named.
func TestVerifyPublishedAndAttested(t *testing.T) {
	c := newPublishedChain(t)
	ctx := context.Background()
	rep, err := Verify(ctx, c.export(t), VerifyOptions{Artifacts: c.artifacts})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Attestations != 1 || rep.Published != 1 || rep.PublishedRoots != 1 {
		t.Fatalf("report: %d attestations, %d published, %d roots; want 1 each", rep.Attestations, rep.Published, rep.PublishedRoots)
	}
	last := c.fsm.Height()
	pubHeight := last - 1
	// replace returns the export with tx 0 of block h replaced by raw.
	replace := func(h uint64, raw []byte) *Export {
		e := c.export(t)
		b, err := ledger.DecodeBlock(e.Blocks[h])
		if err != nil {
			t.Fatal(err)
		}
		b.Txs[0] = raw
		e.Blocks[h] = ledger.EncodeBlock(b)
		return e
	}
	other := newActor("not-the-auditor", ledger.RoleAuditor)
	lied := c.pred
	lied.Result = ledger.AttestationResult{Pass: true, Samples: c.sm.Samples + 1}
	// The owner's manifest with its signature broken.
	env := strings.Replace(string(c.sm.Envelope), `"sig":"`, `"sig":"AAAA`, 1)
	if env == string(c.sm.Envelope) {
		t.Fatalf("no signature in the manifest envelope %s", c.sm.Envelope)
	}
	cases := []struct {
		name   string
		export *Export
		height uint64
		want   []string
	}{
		{"statement signed by another key", replace(last, c.attestTx(t, other.key, c.pred, c.pred)), last, []string{"statement"}},
		{"statement says other than the tx", replace(last, c.rawAttestTx(t, lied, c.pred)), last, []string{"statement", "result"}},
		{"manifest signature forged", replace(pubHeight, c.trainers[0].sign(t, ledger.DatasetPublished{Manifest: env})), pubHeight, []string{"manifest"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(ctx, tc.export, VerifyOptions{Artifacts: c.artifacts})
			var m *Mismatch
			if !errors.As(err, &m) || m.Height != int64(tc.height) || m.Tx != 0 {
				t.Fatalf("verify: %v; want a mismatch at height %d tx 0", err, tc.height)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("verify: %v; want it to say %q", err, w)
				}
			}
			t.Logf("named: %v", err)
		})
	}

	// A shard edited in the artifacts: named, with the shard and sample.
	t.Run("shard edited", func(t *testing.T) {
		texts, err := dspub.DecodeShard(c.pub.Shards[1])
		if err != nil {
			t.Fatal(err)
		}
		texts[2] += " edited"
		p, _ := ArtifactPath(c.artifacts, c.sm.Shards[1].Digest)
		if err := os.WriteFile(p, dspub.EncodeShard(texts), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(p, c.pub.Shards[1], 0o644)
		_, err = Verify(ctx, c.export(t), VerifyOptions{Artifacts: c.artifacts})
		var m *Mismatch
		if !errors.As(err, &m) || m.Height != int64(pubHeight) || m.Field != "shards" || !strings.Contains(err.Error(), "shard 1") {
			t.Fatalf("verify with an edited shard: %v", err)
		}
		t.Logf("named: %v", err)
	})
}
