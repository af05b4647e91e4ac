package node_test

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestGetBlockGathersShared: many concurrent GetBlock calls for one height
// share one cosignature gather, and later calls reuse its result, so that
// GetBlock cannot be used to multiply the nodes' GetCheckpoint traffic.
func TestGetBlockGathersShared(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 3)
	for _, nd := range c.nodes[:3] {
		nd.start(nd.config(3, ""))
	}
	leader := c.leader(c.nodes[:3]...)
	tx, _ := c.adminTx()
	h := c.submit(leader, tx)[0]
	c.waitHeight(h, c.nodes[:3]...)
	nd := c.nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before := nd.n.GatherStarts()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := nd.client.Block(ctx, h, 3, c.chainID)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("GetBlock: %v", err)
		}
	}
	// 0 when an earlier call (the harness's own checks) left a complete
	// gather in the cache.
	if n := nd.n.GatherStarts() - before; n > 1 {
		t.Fatalf("64 GetBlock calls for one height started %d gathers, want at most 1", n)
	}
}
