package ledger

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// TestCrashRecovery crashes the store after each acknowledged block (a
// crash clone keeps what was synced, plus a random part of what was not):
// the reopened FSM is at a block at least as high as the last one
// acknowledged, and its chain verifies.
func TestCrashRecovery(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	fs := vfs.NewCrashableMem()
	db, err := pebblestore.Open("node", pebblestore.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f, err := NewFSM(db.State(), g, FSMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 1; i <= 12; i++ {
		tx := c.coord.sign(t, ModelRegistered{Digest: digest(fmt.Sprint("crash ", i)), Name: "m", Licence: "l", Source: "s"})
		data := EncodeProposal(Proposal{Proposer: c.node.id, Time: t0.UnixNano() + int64(i), Txs: [][]byte{tx}})
		res := f.Apply(&raft.Log{Index: uint64(i), Type: raft.LogCommand, Data: data}).(*ApplyResult)
		if res.Err != nil || res.Block == nil {
			t.Fatalf("apply %d: %+v", i, res)
		}
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		db2, err := pebblestore.Open("node", pebblestore.Options{FS: clone})
		if err != nil {
			t.Fatalf("reopen after crash %d: %v", i, err)
		}
		f2, err := NewFSM(db2.State(), g, FSMOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if f2.Height() < uint64(i) || f2.AppliedIndex() < uint64(i) {
			t.Fatalf("after crash %d: height %d, applied %d", i, f2.Height(), f2.AppliedIndex())
		}
		if err := VerifyChain(db2.State(), g); err != nil {
			t.Fatalf("after crash %d: %v", i, err)
		}
		// Raft replaying the last entry changes nothing.
		if r := f2.Apply(&raft.Log{Index: uint64(i), Type: raft.LogCommand, Data: data}).(*ApplyResult); r.Block != nil {
			t.Fatal("replayed entry made a block")
		}
		db2.Close()
	}
}
