package audit

import (
	"context"
	"testing"
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
