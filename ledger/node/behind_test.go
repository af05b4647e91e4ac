package node_test

import (
	"bytes"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// TestStateBehindSnapshot plays the worst case of the node's deferred FSM
// syncs: a power loss that drops a follower's unsynced block writes back
// past raft's latest snapshot. The follower's pebble state is rolled back
// to a copy taken before that snapshot, while its synced raft log, stable
// store and snapshot files stay. On restart the node must restore the
// snapshot (its state is behind it) and replay the log after it: it ends
// with the same chain as the others and keeps following.
func TestStateBehindSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 3)
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	defer c.stopAll()
	leader := c.leader(c.nodes...)
	f := c.nodes[0]
	if f == leader {
		f = c.nodes[1]
	}
	commit := func(n int) uint64 {
		t.Helper()
		var h uint64
		for range n {
			tx, _ := c.adminTx()
			h = c.submit(leader, tx)[0]
		}
		c.waitHeight(h, c.nodes...)
		return h
	}

	commit(3)
	f.stop()
	old, oldApplied := stateOf(t, f.dataDir, nil)
	f.start(f.config(3, ""))
	commit(3)
	if err := f.n.Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	snapIndex, err := strconv.ParseUint(f.n.RaftStats()["last_snapshot_index"], 10, 64)
	if err != nil || snapIndex <= oldApplied {
		t.Fatalf("snapshot index %d (%v) is not past the saved state's applied index %d", snapIndex, err, oldApplied)
	}
	h := commit(3)
	f.stop()
	_, applied := stateOf(t, f.dataDir, old)
	if applied != oldApplied {
		t.Fatalf("rolled-back state is at applied index %d, want %d", applied, oldApplied)
	}

	f.start(f.config(3, ""))
	c.waitHeight(h, c.nodes...)
	c.sameChains(h, c.nodes...)
	h = commit(2)
	c.sameChains(h, c.nodes...)
}

// stateOf opens the stopped node's pebble store in dataDir; if restore is
// set it first replaces the ledger state with that stream. It returns the
// state as a stream and the raft index the state has applied.
func stateOf(t *testing.T, dataDir string, restore []byte) ([]byte, uint64) {
	t.Helper()
	g, err := ledger.LoadGenesis(filepath.Join(dataDir, "genesis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := pebblestore.Open(filepath.Join(dataDir, "pebble"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if restore != nil {
		if err := db.State().Restore(bytes.NewReader(restore)); err != nil {
			t.Fatal(err)
		}
	}
	f, err := fsm.New(db.State(), g, fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sn := db.State().Snapshot()
	defer sn.Close()
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), f.AppliedIndex()
}
