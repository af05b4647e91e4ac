package audit

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fedtune/fedtune/internal/dspub"
)

// TestPublishedDatasetsFromExport: the published datasets of a chain are
// listed from its re-derived state; a chain whose last block is cut (the
// end frame then names another head) lists nothing and says why.
func TestPublishedDatasetsFromExport(t *testing.T) {
	c := newPublishedChain(t)
	e := c.export(t)
	ls, rep, err := PublishedDatasets(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Digest != c.sm.Digest || ls[0].Name != "arith" || !ls[0].Published || len(ls[0].Attestations) != 1 {
		t.Fatalf("published datasets: %+v, want arith (%s) with its attestation", ls, c.sm.Digest)
	}
	if rep.Height != uint64(len(e.Blocks)-1) || rep.HeadHash != e.HeadHash {
		t.Errorf("report: height %d head %x, want %d %x", rep.Height, rep.HeadHash[:8], len(e.Blocks)-1, e.HeadHash[:8])
	}
	cut := *e
	cut.Blocks = e.Blocks[:len(e.Blocks)-1]
	if ls, _, err := PublishedDatasets(context.Background(), &cut); err == nil {
		t.Fatalf("a chain cut short of its end frame's head listed %+v", ls)
	}
}

// TestCheckShardFile: the streamed check of a shard file says what
// dspub.CheckShard says of the same bytes, for a good shard and for each
// way a shard can be wrong.
func TestCheckShardFile(t *testing.T) {
	c := newPublishedChain(t)
	m := &c.sm.Manifest
	leaves, err := dspub.DecodeLeaves(m, c.pub.Leaves)
	if err != nil {
		t.Fatal(err)
	}
	good := c.pub.Shards[1]
	edited, err := dspub.DecodeShard(good)
	if err != nil {
		t.Fatal(err)
	}
	edited[1] += " (edited)"
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"good", good},
		{"sample edited", dspub.EncodeShard(edited)},
		{"truncated", good[:len(good)-3]},
		{"line added", append(slices.Clone(good), []byte("\"extra\"\n")...)},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "shard")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			bad, err := checkShardFile(m, 1, p, leaves)
			if err != nil {
				t.Fatal(err)
			}
			_, want := dspub.CheckShard(m, 1, tc.data, leaves)
			if (bad == nil) != (want == nil) || (bad != nil && bad.Error() != want.Error()) {
				t.Fatalf("streamed check: %v\nCheckShard:     %v", bad, want)
			}
			if tc.name != "good" && bad == nil {
				t.Fatal("a bad shard checks")
			}
		})
	}
	if _, err := checkShardFile(m, 1, filepath.Join(t.TempDir(), "missing"), leaves); err == nil {
		t.Error("a missing file is no read error")
	}
}
