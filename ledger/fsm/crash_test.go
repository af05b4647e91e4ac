package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// TestCrashRecovery crashes the store after each acknowledged block (a
// crash clone keeps what was synced, plus a random part of what was not):
// the reopened FSM is at a block at least as high as the last one
// acknowledged, and its chain verifies.
func TestCrashRecovery(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	fs := fedtest.NewCrashFS()
	db, err := pebblestore.Open("node", pebblestore.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f, err := New(db.State(), g, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 1; i <= 12; i++ {
		tx := c.coord.sign(t, ledger.ModelRegistered{Digest: digest(fmt.Sprint("crash ", i)), Name: "m", Licence: "l", Source: "s"})
		data := proposalEntry(c.node.id, t0.UnixNano()+int64(i), [][]byte{tx})
		res := f.Apply(&raft.Log{Index: uint64(i), Type: raft.LogCommand, Data: data}).(*ApplyResult)
		if res.Err != nil || res.Block == nil {
			t.Fatalf("apply %d: %+v", i, res)
		}
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rng})
		db2, err := pebblestore.Open("node", pebblestore.Options{FS: clone})
		if err != nil {
			t.Fatalf("reopen after crash %d: %v", i, err)
		}
		f2, err := New(db2.State(), g, Options{})
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

// TestCrashRecoveryDeferSync runs the FSM as a node does (DeferSync: blocks
// are committed without an fsync; each raft entry is stored, synced, in the
// same pebble DB's log before it is applied) and crashes after every block,
// dropping a random part of the unsynced writes, including none or all of
// the deferred blocks. Replaying the stored log from the reopened state's
// applied index, as raft does on restart, rebuilds the same chain: the same
// head hash and applied index as before the crash, and a chain that
// verifies.
func TestCrashRecoveryDeferSync(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	fs := fedtest.NewCrashFS()
	db, err := pebblestore.Open("node", pebblestore.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	f, err := New(db.State(), g, Options{DeferSync: true})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	lost := 0
	for i := 1; i <= 16; i++ {
		var txs [][]byte
		for j := range 1 + i%3 {
			txs = append(txs, c.coord.sign(t, ledger.ModelRegistered{Digest: digest(fmt.Sprint("defer ", i, j)), Name: "m", Licence: "l", Source: "s"}))
		}
		entry := &raft.Log{Index: uint64(i), Term: 1, Type: raft.LogCommand, Data: proposalEntry(c.node.id, t0.UnixNano()+int64(i), txs)}
		if err := db.LogStore().StoreLog(entry); err != nil {
			t.Fatal(err)
		}
		res := f.Apply(entry).(*ApplyResult)
		if res.Err != nil || res.Block == nil {
			t.Fatalf("apply %d: %+v", i, res)
		}
		_, want := f.Head()
		// Half the crashes keep none of the unsynced writes: the last block
		// is then surely lost and must come back from the log.
		pct := 0
		if i%2 == 0 {
			pct = rng.IntN(100)
		}
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng})
		db2, err := pebblestore.Open("node", pebblestore.Options{FS: clone})
		if err != nil {
			t.Fatalf("reopen after crash %d: %v", i, err)
		}
		f2, err := New(db2.State(), g, Options{DeferSync: true})
		if err != nil {
			t.Fatal(err)
		}
		last, err := db2.LogStore().LastIndex()
		if err != nil || last != uint64(i) {
			t.Fatalf("after crash %d: the synced log ends at %d (%v)", i, last, err)
		}
		if f2.AppliedIndex() < uint64(i) {
			lost++
		}
		for idx := f2.AppliedIndex() + 1; idx <= last; idx++ {
			var l raft.Log
			if err := db2.LogStore().GetLog(idx, &l); err != nil {
				t.Fatalf("after crash %d: log %d: %v", i, idx, err)
			}
			if r := f2.Apply(&l).(*ApplyResult); r.Err != nil {
				t.Fatalf("after crash %d: replay %d: %v", i, idx, r.Err)
			}
		}
		if h, got := f2.Head(); h != uint64(i) || got != want || f2.AppliedIndex() != uint64(i) {
			t.Fatalf("after crash %d and replay: height %d applied %d head %x, want height %d head %x", i, h, f2.AppliedIndex(), got[:4], i, want[:4])
		}
		if err := VerifyChain(db2.State(), g); err != nil {
			t.Fatalf("after crash %d: %v", i, err)
		}
		db2.Close()
	}
	if lost == 0 {
		t.Fatal("no crash lost a deferred block: the test did not exercise the replay")
	}
	t.Logf("%d of 16 crashes lost deferred blocks that the log replay restored", lost)
}
