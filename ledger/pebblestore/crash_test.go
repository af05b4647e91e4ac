package pebblestore_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// model is what a store must hold after a sequence of acknowledged writes.
type model struct {
	logs   map[uint64]*raft.Log
	sums   map[uint64][32]byte // SHA-256 of each entry's encoding
	next   uint64
	stable map[string][]byte
	state  map[string]string
}

func newModel() *model {
	return &model{logs: map[uint64]*raft.Log{}, sums: map[uint64][32]byte{}, next: 1, stable: map[string][]byte{}, state: map[string]string{}}
}

func (m *model) clone() *model {
	c := &model{logs: maps.Clone(m.logs), sums: maps.Clone(m.sums), next: m.next, stable: maps.Clone(m.stable), state: maps.Clone(m.state)}
	return c
}

func (m *model) setLog(l *raft.Log) {
	m.logs[l.Index] = l
	m.sums[l.Index] = sha256.Sum256(pebblestore.AppendLog(nil, l))
}

func (m *model) delLog(i uint64) {
	delete(m.logs, i)
	delete(m.sums, i)
}

// stableKeys are every stable key the random ops use, so that a store's
// stable range can be read back completely through Get.
var stableKeys = []string{"CurrentTerm", "LastVoteTerm", "LastVoteCand", "k0", "k1", "k2"}

func (m *model) bounds() (lo, hi uint64) {
	for i := range m.logs {
		if lo == 0 || i < lo {
			lo = i
		}
		hi = max(hi, i)
	}
	return lo, hi
}

// digest hashes a canonical listing of the model.
func (m *model) digest() [32]byte {
	h := sha256.New()
	idx := make([]uint64, 0, len(m.logs))
	for i := range m.logs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		fmt.Fprintf(h, "L%d:%x\n", i, m.sums[i])
	}
	for _, k := range stableKeys {
		if v, ok := m.stable[k]; ok {
			fmt.Fprintf(h, "S%q:%x\n", k, v)
		}
	}
	keys := make([]string, 0, len(m.state))
	for k := range m.state {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "F%q:%x\n", k, m.state[k])
	}
	return [32]byte(h.Sum(nil))
}

// storeDigest reads everything back from db and hashes it as model.digest
// does. It checks on the way that the log is contiguous from FirstIndex to
// LastIndex.
func storeDigest(t testing.TB, db *pebblestore.DB) ([32]byte, string) {
	t.Helper()
	m := newModel()
	ls := db.LogStore()
	first, err := ls.FirstIndex()
	must(t, err)
	last, err := ls.LastIndex()
	must(t, err)
	if first != 0 {
		for i := first; i <= last; i++ {
			var l raft.Log
			if err := ls.GetLog(i, &l); err != nil {
				t.Fatalf("GetLog(%d) within [%d, %d]: %v", i, first, last, err)
			}
			m.setLog(&l)
		}
	}
	for _, k := range stableKeys {
		v, err := db.StableStore().Get([]byte(k))
		if err == nil {
			m.stable[k] = v
		} else if !errors.Is(err, pebblestore.ErrKeyNotFound) {
			t.Fatalf("stable Get(%q): %v", k, err)
		}
	}
	must(t, db.State().Iter(nil, func(k, v []byte) error {
		m.state[string(k)] = string(v)
		return nil
	}))
	return m.digest(), fmt.Sprintf("log [%d, %d], %d stable keys, %d state keys", first, last, len(m.stable), len(m.state))
}

// op is one random write: apply does it to the store, then (only once it is
// acknowledged) update does it to the model.
type op struct {
	name   string
	apply  func(db *pebblestore.DB) error
	update func(m *model)
}

// randomOp draws a write in the patterns raft and the FSM use. With small,
// it draws no large entries and no Flush, so that the WAL never rotates.
func randomOp(rng *rand.Rand, m *model, step int, small bool) op {
	lo, hi := m.bounds()
	switch r := rng.IntN(100); {
	case r < 40 || len(m.logs) == 0: // leader/follower append
		n := 1 + rng.IntN(32)
		if rng.IntN(8) == 0 {
			n = 64
		}
		logs := make([]*raft.Log, n)
		for i := range logs {
			size := rng.IntN(200)
			if !small && rng.IntN(20) == 0 {
				size = 64<<10 + rng.IntN(256<<10) // rotates memtables: flushes race crashes
			}
			data := make([]byte, size)
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			logs[i] = &raft.Log{
				Index: m.next + uint64(i), Term: uint64(step/20 + 1), Type: raft.LogCommand,
				Data: data, AppendedAt: time.Unix(int64(step), int64(i)).UTC(),
			}
		}
		return op{fmt.Sprintf("StoreLogs[%d..%d]", m.next, m.next+uint64(n)-1),
			func(db *pebblestore.DB) error { return db.LogStore().StoreLogs(logs) },
			func(m *model) {
				for _, l := range logs {
					m.setLog(l)
				}
				m.next += uint64(len(logs))
			}}
	case r < 48: // truncate a conflicting suffix
		cut := lo + uint64(rng.Int64N(int64(hi-lo+1)))
		return op{fmt.Sprintf("DeleteRange(%d, %d) suffix", cut, hi),
			func(db *pebblestore.DB) error { return db.LogStore().DeleteRange(cut, hi) },
			func(m *model) {
				for i := cut; i <= hi; i++ {
					m.delLog(i)
				}
				m.next = cut
			}}
	case r < 56: // compact a prefix
		cut := lo + uint64(rng.Int64N(int64(hi-lo+1)))
		return op{fmt.Sprintf("DeleteRange(%d, %d) prefix", lo, cut),
			func(db *pebblestore.DB) error { return db.LogStore().DeleteRange(lo, cut) },
			func(m *model) {
				for i := lo; i <= cut; i++ {
					m.delLog(i)
				}
			}}
	case r < 70: // stable store
		k := stableKeys[rng.IntN(len(stableKeys))]
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], rng.Uint64())
		return op{"Stable.Set " + k,
			func(db *pebblestore.DB) error { return db.StableStore().Set([]byte(k), v[:]) },
			func(m *model) { m.stable[k] = v[:] }}
	case r < 93: // FSM batch
		type w struct {
			k, v string
			del  bool
		}
		var ws []w
		for range 1 + rng.IntN(12) {
			k := fmt.Sprintf("s/%02d", rng.IntN(40))
			if rng.IntN(4) == 0 {
				ws = append(ws, w{k: k, del: true})
			} else {
				ws = append(ws, w{k: k, v: fmt.Sprintf("%d-%d", step, rng.IntN(1e6))})
			}
		}
		return op{fmt.Sprintf("Batch(%d writes)", len(ws)),
			func(db *pebblestore.DB) error {
				b := db.State().NewBatch()
				defer b.Close()
				for _, x := range ws {
					var err error
					if x.del {
						err = b.Delete([]byte(x.k))
					} else {
						err = b.Set([]byte(x.k), []byte(x.v))
					}
					if err != nil {
						return err
					}
				}
				return b.Commit()
			},
			func(m *model) {
				for _, x := range ws {
					if x.del {
						delete(m.state, x.k)
					} else {
						m.state[x.k] = x.v
					}
				}
			}}
	case r < 97: // install an FSM snapshot
		next := map[string]string{}
		for range rng.IntN(30) {
			next[fmt.Sprintf("s/%02d", rng.IntN(40))] = fmt.Sprintf("restored-%d", step)
		}
		var recs [][2]string
		for k, v := range next {
			recs = append(recs, [2]string{k, v})
		}
		slices.SortFunc(recs, func(a, b [2]string) int { return bytes.Compare([]byte(a[0]), []byte(b[0])) })
		stream := buildStream(recs)
		return op{fmt.Sprintf("Restore(%d keys)", len(recs)),
			func(db *pebblestore.DB) error { return db.State().Restore(bytes.NewReader(stream)) },
			func(m *model) { m.state = next }}
	default: // force sstables
		if small {
			return op{"nothing", func(*pebblestore.DB) error { return nil }, func(*model) {}}
		}
		return op{"Flush", func(db *pebblestore.DB) error { return db.Flush() }, func(*model) {}}
	}
}

// crashPoint is a crash clone and the window of acknowledged op counts it
// may reflect: every op acknowledged before the clone began (lo) is in it;
// it may also hold ops up to the one in flight when it ended (hi).
type crashPoint struct {
	fs     *fedtest.CrashFS
	lo, hi int
}

// runCrashSeed runs nOps random ops on a crashable in-memory FS from a
// writer goroutine while the test goroutine takes crash clones at random
// moments (with a random share of unsynced data kept), then reopens each
// clone and checks it holds exactly the state after some op count in its
// window.
func runCrashSeed(t *testing.T, seed uint64, nOps, nCrashes int) {
	rng := rand.New(rand.NewPCG(seed, 0xc4a5))
	fs := fedtest.NewCrashFS()
	db, err := pebblestore.Open("db", pebblestore.Options{FS: fs})
	must(t, err)

	m := newModel()
	digests := [][32]byte{m.digest()} // digests[k]: the model after k ops
	ops := make([]op, 0, nOps)
	opRNG := rand.New(rand.NewPCG(seed, 0x0b5))
	var acked atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := range nOps {
			o := randomOp(opRNG, m, i, false)
			ops = append(ops, o)
			if err := o.apply(db); err != nil {
				done <- fmt.Errorf("op %d %s: %w", i, o.name, err)
				return
			}
			o.update(m)
			digests = append(digests, m.digest())
			acked.Store(int64(i + 1))
		}
		done <- nil
	}()

	targets := make([]int, nCrashes)
	for i := range targets {
		targets[i] = rng.IntN(nOps)
	}
	slices.Sort(targets)
	var points []crashPoint
	var writerErr error
	writerDone := false
	// A writer that makes no progress for this long is stuck (inside
	// pebble): fail naming where, rather than hang the package run.
	const stuckAfter = 3 * time.Minute
	lastAcked, lastProgress := acked.Load(), time.Now()
	checkStuck := func() {
		t.Helper()
		if n := acked.Load(); n != lastAcked {
			lastAcked, lastProgress = n, time.Now()
		} else if time.Since(lastProgress) > stuckAfter {
			t.Fatalf("writer stuck at %d acked ops (of %d) for %v", n, nOps, stuckAfter)
		}
	}
	// Poll every millisecond: a tighter poll competes with the writer for
	// a core.
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for _, target := range targets {
		for !writerDone && acked.Load() < int64(target) {
			select {
			case writerErr = <-done:
				writerDone = true
			case <-poll.C:
				checkStuck()
			}
		}
		if writerDone && acked.Load() < int64(target) {
			break // the writer failed: reported below
		}
		lo := int(acked.Load())
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
		hi := min(int(acked.Load())+1, nOps)
		points = append(points, crashPoint{clone, lo, hi})
	}
	for !writerDone {
		select {
		case writerErr = <-done:
			writerDone = true
		case <-poll.C:
			checkStuck()
		}
	}
	if writerErr != nil {
		t.Fatal(writerErr)
	}
	// A crash after everything was acknowledged keeps everything.
	points = append(points, crashPoint{fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0}), nOps, nOps})
	must(t, db.Close())

	for _, p := range points {
		verifyCrash(t, p, digests, ops)
	}
}

func verifyCrash(t *testing.T, p crashPoint, digests [][32]byte, ops []op) {
	t.Helper()
	db, err := pebblestore.Open("db", pebblestore.Options{FS: p.fs})
	if err != nil {
		t.Fatalf("reopen after a crash with %d ops acknowledged: %v", p.lo, err)
	}
	defer func() { must(t, db.Close()) }()
	got, desc := storeDigest(t, db)
	for k := p.lo; k <= p.hi; k++ {
		if digests[k] == got {
			// A second crash right after recovery (which wrote a new WAL and
			// manifest) loses nothing either.
			again := p.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(uint64(k), 7))})
			db2, err := pebblestore.Open("db", pebblestore.Options{FS: again})
			if err != nil {
				t.Fatalf("reopen after a crash during recovery: %v", err)
			}
			if got2, desc2 := storeDigest(t, db2); got2 != got {
				t.Fatalf("a crash after recovery changed the store: %s, then %s", desc, desc2)
			}
			must(t, db2.Close())
			// The recovered store is writable.
			must(t, db.StableStore().Set([]byte("k0"), []byte("after crash")))
			return
		}
	}
	for k := range digests {
		if digests[k] == got {
			t.Fatalf("crash with ops [%d, %d] acknowledged recovered the state after %d ops (%s); last acknowledged op: %s",
				p.lo, p.hi, k, desc, ops[max(p.lo-1, 0)].name)
		}
	}
	t.Fatalf("crash with ops [%d, %d] acknowledged recovered a state matching no prefix of the ops (%s); ops around: %s",
		p.lo, p.hi, desc, opNames(ops, p.lo-2, p.hi+1))
}

func opNames(ops []op, from, to int) []string {
	var out []string
	for i := max(from, 0); i < min(to, len(ops)); i++ {
		out = append(out, fmt.Sprintf("%d:%s", i+1, ops[i].name))
	}
	return out
}

func TestCrashConsistency(t *testing.T) {
	seeds, nOps := 3, 150
	if fedtest.RaceEnabled {
		seeds, nOps = 2, 100
	}
	if testing.Short() {
		seeds = 1
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			runCrashSeed(t, seed, nOps, 4)
		})
	}
}

// TestNoRaceCrashConsistencyMany runs many more seeded sequences.
func TestNoRaceCrashConsistencyMany(t *testing.T) {
	fedtest.SkipUnderRace(t)
	seeds := 12
	if testing.Short() {
		seeds = 4
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprintf("seed%d", 100+seed), func(t *testing.T) {
			runCrashSeed(t, 100+seed, 300, 6)
		})
	}
}

// The crash clones do drop what was not synced: the same checks on a NoSync
// store find acknowledged writes lost. (Without this, the tests above could
// pass on a filesystem that never loses anything.)
func TestCrashCloneDropsUnsyncedWrites(t *testing.T) {
	fs := fedtest.NewCrashFS()
	db, err := pebblestore.Open("db", pebblestore.Options{FS: fs, NoSync: true})
	must(t, err)
	m := newModel()
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range 50 {
		o := randomOp(rng, m, i, false)
		must(t, o.apply(db))
		o.update(m)
	}
	clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	must(t, db.Close())
	db, err = pebblestore.Open("db", pebblestore.Options{FS: clone})
	must(t, err)
	defer db.Close()
	if got, desc := storeDigest(t, db); got == m.digest() {
		t.Fatalf("a NoSync store kept every acknowledged write through a crash (%s)", desc)
	}
}

// A CommitNoSync batch is made durable by the next synced write to the DB,
// and is lost, whole, by a crash before one.
func TestCommitNoSyncDurableWithNextSync(t *testing.T) {
	fs := fedtest.NewCrashFS()
	db, err := pebblestore.Open("db", pebblestore.Options{FS: fs})
	must(t, err)
	b := db.State().NewBatch()
	must(t, b.Set([]byte("applied"), []byte("1")))
	must(t, b.Set([]byte("tx"), []byte("a")))
	must(t, b.CommitNoSync())
	beforeSync := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	must(t, db.LogStore().StoreLogs(entries(1, 1)))
	afterSync := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	must(t, db.Close())

	for _, tc := range []struct {
		name string
		fs   vfs.FS
		want []string
	}{
		{"crash before the next sync", beforeSync, nil},
		{"crash after the next sync", afterSync, []string{"applied=1", "tx=a"}},
	} {
		db, err := pebblestore.Open("db", pebblestore.Options{FS: tc.fs})
		must(t, err)
		if got := dump(t, db.State()); !slices.Equal(got, tc.want) {
			t.Errorf("%s: state %q, want %q", tc.name, got, tc.want)
		}
		must(t, db.Close())
	}
}
