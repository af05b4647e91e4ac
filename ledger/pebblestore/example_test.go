package pebblestore_test

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// One pebble database holds the raft log, raft's stable store and the FSM
// state; the FSM writes in atomic batches and streams snapshots.
func Example() {
	db, err := pebblestore.Open("node", pebblestore.Options{FS: vfs.NewMem()})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	// What raft uses.
	logs, stable := db.LogStore(), db.StableStore()
	_ = logs.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Data: []byte("block 1")}})
	_ = stable.SetUint64([]byte("CurrentTerm"), 1)
	last, _ := logs.LastIndex()

	// What the FSM uses.
	b := db.State().NewBatch()
	_ = b.Set([]byte("member/alice"), []byte("trainer"))
	_ = b.Set([]byte("member/bob"), []byte("auditor"))
	_ = b.Commit()
	_ = db.State().Iter([]byte("member/"), func(k, v []byte) error {
		fmt.Printf("%s = %s\n", k, v)
		return nil
	})

	// A snapshot streamed to another node and restored there.
	sn := db.State().Snapshot()
	var stream bytes.Buffer
	_, _ = sn.WriteTo(&stream)
	_ = sn.Close()
	other, _ := pebblestore.Open("other", pebblestore.Options{FS: vfs.NewMem()})
	defer other.Close()
	_ = other.State().Restore(&stream)
	v, ok, _ := other.State().Get([]byte("member/bob"))
	fmt.Println("last log index:", last, "restored bob:", string(v), ok)
	// Output:
	// member/alice = trainer
	// member/bob = auditor
	// last log index: 1 restored bob: auditor true
}
