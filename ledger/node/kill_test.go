package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// TestKillRestart kills a node running as a separate OS process with
// SIGKILL while txs are being committed, restarts it on the same data
// directory, and checks that its chain is byte-identical to the others'.
func TestKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 3, 2) // node 2 is a child process
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	c.leader(c.nodes...)
	victim := c.nodes[2]
	for range 5 {
		tx, _ := c.adminTx()
		c.submit(c.nodes[0], tx)
	}

	// Keep committing through node 0 while node 2 dies.
	txs := make([][]byte, 40)
	for i := range txs {
		txs[i], _ = c.adminTx()
	}
	var wg sync.WaitGroup
	var heights []uint64
	tenth := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, tx := range txs {
			h, err := c.nodes[0].client.SubmitWait(ctx, tx)
			if err != nil {
				t.Errorf("submit: %v", err)
				return
			}
			heights = append(heights, h)
			if len(heights) == 10 {
				close(tenth)
			}
		}
	}()
	select {
	case <-tenth:
	case <-time.After(60 * time.Second):
	}
	victim.kill()
	t.Logf("killed node 2 (SIGKILL)")
	wg.Wait()
	if t.Failed() {
		return
	}
	head := heights[len(heights)-1]
	c.waitHeight(head, c.nodes[:2]...)

	victim.start(victim.config(3, ""))
	c.waitHeight(head, c.nodes...)
	c.sameChains(head, c.nodes...)

	// The restarted node serves every tx with a valid inclusion proof.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tx := range txs {
		if _, err := victim.client.Tx(ctx, ledger.TxHash(tx)); err != nil {
			t.Fatalf("restarted node: %v", err)
		}
	}
	// And a clean SIGTERM stop works for the child process too.
	victim.stop()
}
