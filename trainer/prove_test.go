package trainer

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/ledger"
)

// newShardNode builds a trainer node over a shipped shard (nothing is
// dialled: New only loads the key and data).
func newShardNode(t *testing.T, shard string) *Node {
	t.Helper()
	dir := t.TempDir()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "t.key")
	if err := ledger.SaveKey(keyFile, k); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "t", KeyFile: keyFile, Coordinator: "127.0.0.1:1", Ledger: "127.0.0.1:2", Insecure: true,
		Data: filepath.Join("..", "datasets", "testdata", "shards", shard), Licence: "CC0-1.0", Source: "test", WorkDir: filepath.Join(dir, "work")}
	n, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNodeProve answers proof questions from a shipped shard: a sample of
// it is included, another shard's sample is excluded, both proofs verify
// against the manifest's root, and questions about a dataset the node does
// not hold, or with a malformed hash, are refused.
func TestNodeProve(t *testing.T) {
	n := newShardNode(t, "trainer-1.jsonl")
	other, err := datasets.Load(filepath.Join("..", "datasets", "testdata", "shards", "trainer-2.jsonl"), datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := datasets.SampleDigest(n.data.Dataset.Samples[7].Text)
	var out [32]byte
	for _, s := range other.Samples {
		if h := datasets.SampleDigest(s.Text); !n.holds(h) {
			out = h
			break
		}
	}
	for _, tc := range []struct {
		name   string
		leaf   [32]byte
		wantIn bool
	}{{"included", in, true}, {"excluded", out, false}} {
		t.Run(tc.name, func(t *testing.T) {
			js, err := n.Prove(n.DatasetDigest(), tc.leaf[:])
			if err != nil {
				t.Fatal(err)
			}
			p, err := datasets.DecodeProof(js)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Verify(n.manifest.RootBytes(), n.Samples()); err != nil {
				t.Fatalf("proof does not verify against the manifest: %v", err)
			}
			if p.Included() != tc.wantIn {
				t.Errorf("proof kind %s, want included=%v", p.Kind, tc.wantIn)
			}
		})
	}
	if _, err := n.Prove(strings.Repeat("a", 64), in[:]); err == nil || !strings.Contains(err.Error(), "does not hold dataset") {
		t.Errorf("another dataset: %v, want a refusal", err)
	}
	if _, err := n.Prove(n.DatasetDigest(), in[:31]); err == nil || !strings.Contains(err.Error(), "31 bytes") {
		t.Errorf("short hash: %v, want a refusal", err)
	}
}

// holds reports whether h is a sample hash of the node's data.
func (n *Node) holds(h [32]byte) bool {
	for _, s := range n.data.Dataset.Samples {
		if datasets.SampleDigest(s.Text) == h {
			return true
		}
	}
	return false
}
