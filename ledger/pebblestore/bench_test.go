package pebblestore_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// BenchmarkStoreLogs measures synced StoreLogs of 1 and 64 entries (one
// fsync each call) on a real directory: raft's per-append cost. Entries are
// 512 bytes, about one signed ledger tx.
func BenchmarkStoreLogs(b *testing.B) {
	for _, n := range []int{1, 64} {
		for _, sync := range []bool{true, false} {
			name := fmt.Sprintf("entries=%d/sync=%v", n, sync)
			b.Run(name, func(b *testing.B) {
				db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{NoSync: !sync})
				if err != nil {
					b.Fatal(err)
				}
				defer db.Close()
				logs := make([]*raft.Log, n)
				for i := range logs {
					logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: make([]byte, 512)}
				}
				b.SetBytes(int64(n * 512))
				next := uint64(1)
				for b.Loop() {
					for _, l := range logs {
						l.Index = next
						next++
					}
					if err := db.LogStore().StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
			})
		}
	}
}

// BenchmarkStoreLogsParallel has many goroutines append single entries at
// once: pebble's commit pipeline shares one fsync among concurrent batches.
func BenchmarkStoreLogsParallel(b *testing.B) {
	db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var next atomic.Uint64
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		l := &raft.Log{Term: 1, Type: raft.LogCommand, Data: make([]byte, 512)}
		for pb.Next() {
			l.Index = next.Add(1)
			if err := db.LogStore().StoreLogs([]*raft.Log{l}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkStateBatchCommit is the FSM's per-block write: a synced batch of
// 16 keys.
func BenchmarkStateBatchCommit(b *testing.B) {
	db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 256)
	i := 0
	for b.Loop() {
		bt := db.State().NewBatch()
		for k := range 16 {
			if err := bt.Set([]byte(fmt.Sprintf("tx/%08d/%02d", i, k)), val); err != nil {
				b.Fatal(err)
			}
		}
		if err := bt.Commit(); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkGetLog reads entries back (from the memtable and block cache).
func BenchmarkGetLog(b *testing.B) {
	db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	must(b, db.LogStore().StoreLogs(entries(1, 1000)))
	var l raft.Log
	i := uint64(0)
	for b.Loop() {
		if err := db.LogStore().GetLog(1+i%1000, &l); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkFirstIndexAfterCompaction: FirstIndex right after raft deleted
// most of a 100k-entry log with one range deletion, while the deleted
// entries still sit in the same memtable as the tombstone. Pebble then steps
// over the covered entries (about 1.6 ns each here) until a flush drops
// them; raft calls FirstIndex only around snapshots and at startup.
func BenchmarkFirstIndexAfterCompaction(b *testing.B) {
	db, err := pebblestore.Open(b.TempDir(), pebblestore.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ls := db.LogStore()
	for i := uint64(1); i <= 100_000; i += 1000 {
		must(b, ls.StoreLogs(entries(i, i+999)))
	}
	must(b, ls.DeleteRange(1, 99_000))
	for b.Loop() {
		if f, err := ls.FirstIndex(); err != nil || f != 99_001 {
			b.Fatalf("FirstIndex = %d, %v", f, err)
		}
	}
}
