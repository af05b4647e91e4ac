package pebblestore_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// injector fails the chosen file operations with probability pct/1000 once
// armed.
type injector struct {
	armed  atomic.Bool
	suffix string
	kinds  map[errorfs.OpKind]bool
	mu     sync.Mutex
	rng    *rand.Rand
	pct    int
	hits   atomic.Int64
}

func (in *injector) MaybeError(op errorfs.Op) error {
	if !in.armed.Load() || !in.kinds[op.Kind] || !strings.HasSuffix(op.Path, in.suffix) {
		return nil
	}
	in.mu.Lock()
	fail := in.rng.IntN(1000) < in.pct
	in.mu.Unlock()
	if !fail {
		return nil
	}
	in.hits.Add(1)
	return errorfs.ErrInjected
}

func (in *injector) String() string { return "test injector on " + in.suffix }

// WAL write and sync errors fail the write that met them, make the DB fail
// every later call with ErrFatal, and lose nothing acknowledged before.
//
// The ops here never rotate the WAL (no large entries, no Flush): pebble
// v2.1.7 panics with its mutex released when closing the old WAL fails
// during a rotation, which the Go runtime turns into an unrecoverable
// "unlock of unlocked mutex" fatal error. That is pebble's fail-stop and no
// caller can turn it into an error.
func TestWALErrorsSurface(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 3
	}
	kindSets := []struct {
		name  string
		kinds []errorfs.OpKind
	}{
		{"write", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}},
		{"sync", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}},
	}
	for _, ks := range kindSets {
		for seed := range uint64(seeds) {
			t.Run(fmt.Sprintf("%s/seed%d", ks.name, seed), func(t *testing.T) {
				kinds := map[errorfs.OpKind]bool{}
				for _, k := range ks.kinds {
					kinds[k] = true
				}
				runWALErrorSeed(t, seed, kinds)
			})
		}
	}
}

func runWALErrorSeed(t *testing.T, seed uint64, kinds map[errorfs.OpKind]bool) {
	mem := fedtest.NewCrashFS()
	inj := &injector{suffix: ".log", kinds: kinds, rng: rand.New(rand.NewPCG(seed, 3)), pct: 20}
	db, err := pebblestore.Open("db", pebblestore.Options{FS: errorfs.Wrap(mem, inj)})
	must(t, err)

	m := newModel()
	digests := [][32]byte{m.digest()}
	rng := rand.New(rand.NewPCG(seed, 4))
	armAt := rng.IntN(40)
	failedAt := -1
	var landed [32]byte // the state had the failed op reached the disk
	for i := 0; i < 400; i++ {
		if i == armAt {
			inj.armed.Store(true)
		}
		o := randomOp(rng, m, i, true)
		if err := o.apply(db); err != nil {
			if inj.hits.Load() == 0 {
				t.Fatalf("op %d %s failed with no error injected: %v", i, o.name, err)
			}
			if !errors.Is(err, pebblestore.ErrFatal) {
				t.Fatalf("op %d %s: %v; want ErrFatal", i, o.name, err)
			}
			failedAt = i
			c := m.clone()
			o.update(c)
			landed = c.digest()
			break
		}
		o.update(m)
		digests = append(digests, m.digest())
	}
	if failedAt < 0 {
		t.Fatalf("no op failed in 400 with %d errors injected", inj.hits.Load())
	}
	inj.armed.Store(false)

	// The DB stays failed: no later write can be acknowledged.
	if err := db.LogStore().StoreLogs(entries(1, 1)); !errors.Is(err, pebblestore.ErrFatal) {
		t.Fatalf("StoreLogs after a fatal error: %v; want ErrFatal", err)
	}
	if err := db.StableStore().Set([]byte("k"), nil); !errors.Is(err, pebblestore.ErrFatal) {
		t.Fatalf("Set after a fatal error: %v; want ErrFatal", err)
	}
	if err := db.Err(); !errors.Is(err, pebblestore.ErrFatal) {
		t.Fatalf("Err() = %v; want ErrFatal", err)
	}
	if err := db.Close(); !errors.Is(err, pebblestore.ErrFatal) {
		t.Fatalf("Close after a fatal error: %v; want ErrFatal", err)
	}

	// What reached the disk holds every acknowledged op, and at most the one
	// that failed besides.
	re, err := pebblestore.Open("db", pebblestore.Options{FS: mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})})
	if err != nil {
		t.Fatalf("reopen after op %d failed: %v", failedAt, err)
	}
	defer re.Close()
	got, desc := storeDigest(t, re)
	if got != digests[failedAt] && got != landed {
		t.Fatalf("after op %d failed, the disk holds %s: not the state after %d ops", failedAt, desc, failedAt)
	}
}

// Read errors from sstables surface as errors: never as "not found", which
// raft would take for a missing entry or an unset term.
func TestReadErrorsAreNotNotFound(t *testing.T) {
	mem := vfs.NewMem()
	inj := &injector{suffix: ".sst", kinds: map[errorfs.OpKind]bool{errorfs.OpFileReadAt: true, errorfs.OpFileRead: true},
		rng: rand.New(rand.NewPCG(1, 1)), pct: 1000}
	fs := errorfs.Wrap(mem, inj)
	db, err := pebblestore.Open("db", pebblestore.Options{FS: fs})
	must(t, err)
	// 8 KiB entries: each lands in its own sstable data block, so reading
	// the layout key on Open caches only the block it shares with entry 1.
	logs := entries(1, 100)
	for _, l := range logs {
		l.Data = make([]byte, 8<<10)
		l.Data[0] = byte(l.Index)
	}
	must(t, db.LogStore().StoreLogs(logs))
	must(t, db.StableStore().SetUint64([]byte("CurrentTerm"), 5))
	commit(t, db.State(), "k", "v")
	must(t, db.Flush())
	must(t, db.Close())

	db, err = pebblestore.Open("db", pebblestore.Options{FS: fs})
	must(t, err)
	defer db.Close()
	inj.armed.Store(true)
	var l raft.Log
	if err := db.LogStore().GetLog(50, &l); err == nil || errors.Is(err, raft.ErrLogNotFound) {
		t.Errorf("GetLog with failing reads: %v; want a read error", err)
	}
	if n, err := db.LogStore().LastIndex(); err == nil {
		t.Errorf("LastIndex with failing reads = %d, nil; want an error", n)
	}
	if v, err := db.StableStore().GetUint64([]byte("CurrentTerm")); err == nil || err.Error() == "not found" {
		t.Errorf("GetUint64 with failing reads = %d, %v; want a read error", v, err)
	}
	if v, ok, err := db.State().Get([]byte("k")); err == nil {
		t.Errorf("State.Get with failing reads = %q, %v, nil; want an error", v, ok)
	}
	if err := db.State().Iter(nil, func(k, v []byte) error { return nil }); err == nil {
		t.Error("State.Iter with failing reads: nil error")
	}
	if inj.hits.Load() == 0 {
		t.Fatal("no read error was injected")
	}
	inj.armed.Store(false)
	checkBounds(t, db.LogStore(), 1, 100)
	checkLog(t, db.LogStore(), logs[49])
}

// Failing sstable writes (flushes, compactions) lose nothing: the entries
// stay in the WAL, pebble retries in the background, and once the disk works
// again every acknowledged write is there after a crash.
func TestFlushErrorsLoseNothing(t *testing.T) {
	mem := fedtest.NewCrashFS()
	inj := &injector{suffix: ".sst", kinds: map[errorfs.OpKind]bool{errorfs.OpCreate: true, errorfs.OpFileWrite: true, errorfs.OpFileSync: true},
		rng: rand.New(rand.NewPCG(2, 2)), pct: 1000}
	db, err := pebblestore.Open("db", pebblestore.Options{FS: errorfs.Wrap(mem, inj)})
	must(t, err)
	m := newModel()
	rng := rand.New(rand.NewPCG(6, 6))
	nOps := 120 // 60 MiB of appends: memtables of 16 MiB fill several times
	if fedtest.RaceEnabled {
		nOps = 50
	}
	inj.armed.Store(true)
	done := make(chan error, 1)
	var opsDone atomic.Int64
	go func() {
		for i := range nOps {
			o := randomOp(rng, m, i, true)
			if i%2 == 0 { // 1 MiB appends fill memtables, so flushes run (and fail)
				logs := make([]*raft.Log, 8)
				for k := range logs {
					logs[k] = &raft.Log{Index: m.next + uint64(k), Term: 1, Data: bytes.Repeat([]byte{byte(i)}, 128<<10)}
				}
				o = op{"big StoreLogs", func(db *pebblestore.DB) error { return db.LogStore().StoreLogs(logs) },
					func(m *model) {
						for _, l := range logs {
							m.setLog(l)
						}
						m.next += uint64(len(logs))
					}}
			}
			if err := o.apply(db); err != nil {
				done <- fmt.Errorf("op %d %s: %w", i, o.name, err)
				return
			}
			o.update(m)
			opsDone.Store(int64(i + 1))
		}
		done <- nil
	}()
	// The disk heals after a while; writes that stalled behind the failing
	// flushes (pebble stops writes when memtables pile up) then go on.
	deadline := time.Now().Add(60 * time.Second)
	for inj.hits.Load() == 0 && len(done) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let the failing flush retry a while
	inj.armed.Store(false)
	stuck := time.NewTimer(2 * time.Minute)
	defer stuck.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-stuck.C:
		t.Fatalf("writer stuck at op %d of %d 2m after the disk healed (%d sstable operations had failed)", opsDone.Load(), nOps, inj.hits.Load())
	}
	if inj.hits.Load() == 0 {
		t.Fatal("no sstable write failed: the test exercised nothing")
	}
	want := m.digest()
	clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	must(t, db.Close())
	re, err := pebblestore.Open("db", pebblestore.Options{FS: clone})
	must(t, err)
	defer re.Close()
	if got, desc := storeDigest(t, re); got != want {
		t.Fatalf("after failed flushes and a crash the store holds %s, not every acknowledged write", desc)
	}
	t.Logf("%d sstable operations failed", inj.hits.Load())
}
