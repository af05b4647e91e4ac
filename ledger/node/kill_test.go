package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// TestKillRestart runs three nodes as separate OS processes. It kills a
// follower with SIGKILL while txs are being committed and restarts it on
// the same data directory; then it kills the leader the same way while
// txs are in flight, which leaves some writes' fate unknown to their
// submitters. Resubmitting them commits each tx exactly once, and every
// node ends with a byte-identical chain.
func TestKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 3, 0, 1, 2)
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	leader := c.leader(c.nodes...)
	var all [][]byte
	for range 5 {
		tx, _ := c.adminTx()
		c.submit(leader, tx)
		all = append(all, tx)
	}

	// submitWhileKilling submits n txs through via, one at a time with
	// resubmission, and SIGKILLs victim after the tenth commits.
	submitWhileKilling := func(via, victim *tnode, n int) uint64 {
		t.Helper()
		txs := make([][]byte, n)
		for i := range txs {
			txs[i], _ = c.adminTx()
		}
		all = append(all, txs...)
		var heights []uint64
		tenth := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			for _, tx := range txs {
				h, err := via.client.SubmitWait(ctx, tx)
				if err != nil {
					t.Errorf("submit via node %d: %v", via.idx, err)
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
		case <-time.After(90 * time.Second):
		}
		victim.kill()
		t.Logf("killed node %d (SIGKILL)", victim.idx)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		return heights[len(heights)-1]
	}

	// A follower dies and comes back.
	var follower, other *tnode
	for _, nd := range c.nodes {
		if nd != leader {
			if follower == nil {
				follower = nd
			} else {
				other = nd
			}
		}
	}
	head := submitWhileKilling(leader, follower, 30)
	follower.start(follower.config(3, ""))
	c.waitHeight(head, c.nodes...)
	c.sameChains(head, c.nodes...)

	// The leader dies with writes in flight; a new leader takes over.
	head = submitWhileKilling(other, leader, 30)
	leader.start(leader.config(3, ""))
	c.waitHeight(head, c.nodes...)
	c.sameChains(head, c.nodes...)

	// Every tx is on the chain exactly once.
	seen := map[[32]byte]int{}
	for _, enc := range c.nodes[0].chain(head) {
		b, err := ledger.DecodeBlock(enc)
		if err != nil {
			t.Fatal(err)
		}
		for _, tx := range b.Txs {
			seen[ledger.TxHash(tx)]++
		}
	}
	for i, tx := range all {
		if n := seen[ledger.TxHash(tx)]; n != 1 {
			t.Errorf("tx %d is on the chain %d times", i, n)
		}
	}
	// The restarted nodes serve txs with valid inclusion proofs.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tx := range all {
		if _, err := leader.client.Tx(ctx, ledger.TxHash(tx)); err != nil {
			t.Fatalf("restarted node: %v", err)
		}
	}
	// A clean SIGTERM stop works for a child process.
	leader.stop()
}
