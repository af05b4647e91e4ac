package main

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// The storage+raft driver runs end to end: three raft nodes over TCP on
// pebble, signed txs committed at two concurrency levels.
func TestRaftBenchRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node raft cluster")
	}
	if err := runRaft([]string{"-conc", "1,4", "-duration", "300ms", "-warmup", "0", "-dir", t.TempDir()}); err != nil {
		t.Fatal(err)
	}
}

// The bench FSM checks what the ledger's does: member, signature, nonce.
func TestBenchFSMRejects(t *testing.T) {
	db, err := pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, stranger, _ := ed25519.GenerateKey(nil)
	f := &benchFSM{state: db.State(), members: &members{pubs: []ed25519.PublicKey{pub}}, nonces: map[uint16]uint64{}}
	tx := func(signer uint16, nonce uint64, key ed25519.PrivateKey) []byte {
		b := binary.BigEndian.AppendUint16(nil, signer)
		b = binary.BigEndian.AppendUint64(b, nonce)
		b = append(b, "body"...)
		return append(b, ed25519.Sign(key, b)...)
	}
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: tx(0, 1, priv)},     // good
		{Index: 2, Type: raft.LogCommand, Data: tx(0, 1, priv)},     // replayed nonce
		{Index: 3, Type: raft.LogCommand, Data: tx(0, 2, stranger)}, // bad signature
		{Index: 4, Type: raft.LogCommand, Data: tx(7, 3, priv)},     // unknown signer
		{Index: 5, Type: raft.LogCommand, Data: []byte("short")},    // malformed
		{Index: 6, Type: raft.LogCommand, Data: tx(0, 9, priv)},     // good
	}
	out := f.ApplyBatch(logs)
	for i, want := range []bool{true, false, false, false, false, true} {
		err, _ := out[i].(error)
		if ok := err == nil; ok != want {
			t.Errorf("entry %d: result %v, want accepted=%v", i+1, out[i], want)
		}
		if err != nil && !errors.Is(err, errBadTx) {
			t.Errorf("entry %d: %v is not errBadTx", i+1, err)
		}
	}
	if f.applied.Load() != 6 {
		t.Errorf("applied index %d, want 6", f.applied.Load())
	}
}
