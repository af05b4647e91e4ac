package audit

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/ledger"
)

// Proofs over the shipped shards verify against the root the ledger's
// dataset records lead to; tampered manifests do not.
func TestProofsAgainstLedger(t *testing.T) {
	c := newTestChain(t)
	for i, sm := range c.manifests {
		ds, err := c.fsm.Dataset(sm.Digest)
		if err != nil {
			t.Fatal(err)
		}
		owner, err := c.fsm.Member(ds.Owner)
		if err != nil {
			t.Fatal(err)
		}
		path, _ := ArtifactPath(c.artifacts, sm.Digest)
		file, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for j, s := range c.data[i].Samples {
			p, err := c.trees[i].Prove(datasets.SampleDigest(s.Text))
			if err != nil {
				t.Fatal(err)
			}
			if j%2 == 0 {
				p.Manifest = string(file) // embedded
				file = nil
			}
			p2, err := datasets.DecodeProof(p.Encode())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := CheckProofAgainstLedger(p2, ds, owner, file); err != nil || !p2.Included() {
				t.Fatalf("dataset %d sample %s: %v", i, s.ID, err)
			}
			file, _ = os.ReadFile(path)
		}
		// A sample of another trainer's shard that is not in this one.
		other := c.data[(i+1)%3].Samples[0].Text
		p, _ := c.trees[i].Prove(datasets.SampleDigest(other))
		if _, err := CheckProofAgainstLedger(p, ds, owner, file); err != nil || p.Included() {
			t.Fatalf("dataset %d: exclusion: %v", i, err)
		}
		// The proof of dataset i checked against dataset i+1's record fails.
		ds2, _ := c.fsm.Dataset(c.manifests[(i+1)%3].Digest)
		if _, err := CheckProofAgainstLedger(p, ds2, owner, file); !errors.Is(err, ErrUntrustedManifest) || !strings.Contains(err.Error(), "hashes to") {
			t.Fatalf("wrong dataset: %v", err)
		}
	}
	// A manifest re-signed by someone else, for the same dataset record.
	ds, _ := c.fsm.Dataset(c.manifests[0].Digest)
	owner, _ := c.fsm.Member(ds.Owner)
	m := c.manifests[0].Manifest
	m.Owner = c.trainers[1].id
	forged, err := datasets.SignManifest(c.trainers[1].key, &m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := TrustedManifest(ds, owner, forged.Envelope); !errors.Is(err, ErrUntrustedManifest) {
		t.Fatalf("forged manifest: %v", err)
	}
	// A forged proof fails against the ledger's root.
	p, _ := c.trees[0].Prove(datasets.SampleDigest("not a sample"))
	p.Kind, p.Leaf, p.Left, p.Right = datasets.ProofInclusion, p.Right, nil, nil
	p.Leaf.Hash = p.Sample
	_, err = CheckProofAgainstLedger(p, ds, owner, c.manifests[0].Envelope)
	if !errors.Is(err, datasets.ErrBadProof) || !strings.Contains(err.Error(), "audit path does not lead to the root") {
		t.Fatalf("forged proof: %v", err)
	}
	var _ = ledger.Dataset{}
}
