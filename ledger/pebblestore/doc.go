// Package pebblestore keeps a ledger node's durable state in one pebble
// database: the raft log, raft's stable store and the FSM's key/value state.
//
// The three live in disjoint key ranges, each a one-byte prefix:
//
//	0x00 meta    layout version
//	0x01 log     raft log entries, key = 0x01 ‖ big-endian uint64 index
//	0x02 stable  raft's stable store (current term, last vote, ...)
//	0x03 state   the FSM's keys, as the FSM names them
//
// Every iterator is bounded to its range (LowerBound/UpperBound), so no scan
// ever strays into another range.
//
// Writes are synced (pebble.Sync) unless Options.NoSync is set, and each
// write call is one pebble batch, so StoreLogs of many entries costs one fsync
// and concurrent writers share fsyncs through pebble's commit pipeline.
//
// Usage:
//
//	db, err := pebblestore.Open(dir, pebblestore.Options{Logger: log})
//	...
//	defer db.Close()
//	r, err := raft.NewRaft(conf, fsm, db.LogStore(), db.StableStore(), snaps, trans)
//
// The FSM keeps its state through db.State(): Get, prefix-bounded Iter, indexed
// batches committed atomically, and consistent snapshots that stream the whole
// range (Snapshot.WriteTo) and load it back atomically (State.Restore).
//
// Tests run the stores on vfs.NewMem, on a crashable vfs.MemFS (fedtest.CrashFS) with CrashClone
// to check that every acknowledged write survives a crash, and on errorfs to
// check that disk errors surface as errors.
package pebblestore
