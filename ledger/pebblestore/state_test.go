package pebblestore_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// commit sets kv (a nil value deletes) in one batch.
func commit(t testing.TB, s *pebblestore.State, kv ...string) {
	t.Helper()
	b := s.NewBatch()
	defer b.Close()
	for i := 0; i < len(kv); i += 2 {
		if err := b.Set([]byte(kv[i]), []byte(kv[i+1])); err != nil {
			t.Fatalf("Set: %v", err)
		}
	}
	if err := b.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// collect returns "k=v" for each pair that iter yields.
func collect(t testing.TB, iter func(fn func(k, v []byte) error) error) []string {
	t.Helper()
	var out []string
	if err := iter(func(k, v []byte) error {
		out = append(out, string(k)+"="+string(v))
		return nil
	}); err != nil {
		t.Fatalf("iterate: %v", err)
	}
	return out
}

func TestStateGetIter(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "a/1", "x", "a/2", "y", "a/10", "z", "b/1", "w", "a", "root", "a0", "after")
	if v, ok, err := s.Get([]byte("a/2")); err != nil || !ok || string(v) != "y" {
		t.Fatalf("Get(a/2) = %q, %v, %v", v, ok, err)
	}
	if v, ok, err := s.Get([]byte("a/3")); err != nil || ok || v != nil {
		t.Fatalf("Get(a/3) = %q, %v, %v; want not found", v, ok, err)
	}
	tests := []struct {
		name          string
		prefix, start string
		want          []string
	}{
		{"prefix", "a/", "", []string{"a/1=x", "a/10=z", "a/2=y"}},
		{"whole", "", "", []string{"a=root", "a/1=x", "a/10=z", "a/2=y", "a0=after", "b/1=w"}},
		{"from", "a/", "a/10", []string{"a/10=z", "a/2=y"}},
		{"from between keys", "a/", "a/11", []string{"a/2=y"}},
		{"from before prefix", "a/", "0", []string{"a/1=x", "a/10=z", "a/2=y"}},
		{"from after prefix", "a/", "a0", nil},
		{"no match", "c", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := collect(t, func(fn func(k, v []byte) error) error {
				return s.IterFrom([]byte(tc.prefix), []byte(tc.start), fn)
			})
			if !slices.Equal(got, tc.want) {
				t.Fatalf("IterFrom(%q, %q) = %q, want %q", tc.prefix, tc.start, got, tc.want)
			}
		})
	}
}

func TestStateIterStopAndErrors(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "k1", "1", "k2", "2", "k3", "3")
	n := 0
	err := s.Iter([]byte("k"), func(k, v []byte) error {
		n++
		if n == 2 {
			return pebblestore.ErrStopIter
		}
		return nil
	})
	if err != nil || n != 2 {
		t.Fatalf("Iter stopped with ErrStopIter: err %v after %d keys; want nil after 2", err, n)
	}
	boom := errors.New("boom")
	if err := s.Iter(nil, func(k, v []byte) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Iter error from fn: %v, want boom", err)
	}
}

func TestStateValuesAreCopies(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "k", "value")
	v, _, _ := s.Get([]byte("k"))
	v[0] = 'X'
	var kept [][]byte
	_ = s.Iter(nil, func(k, v []byte) error { kept = append(kept, k, v); return nil })
	commit(t, s, "k", "other", "l", "more")
	if v2, _, _ := s.Get([]byte("k")); string(v2) != "other" {
		t.Fatalf("Get after write = %q", v2)
	}
	if string(kept[0]) != "k" || string(kept[1]) != "value" {
		t.Fatalf("kept iteration slices changed to %q", kept)
	}
}

func TestStateEmptyValue(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "k", "")
	v, ok, err := s.Get([]byte("k"))
	if err != nil || !ok || v == nil || len(v) != 0 {
		t.Fatalf("Get of an empty value = %q (nil %v), %v, %v; want empty, found", v, v == nil, ok, err)
	}
}

func TestBatchSeesOwnWrites(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "a", "1", "b", "2", "c", "3")
	b := s.NewBatch()
	defer b.Close()
	must(t, b.Set([]byte("b"), []byte("20")))
	must(t, b.Delete([]byte("c")))
	must(t, b.Set([]byte("d"), []byte("4")))
	if v, ok, err := b.Get([]byte("b")); err != nil || !ok || string(v) != "20" {
		t.Fatalf("batch Get(b) = %q, %v, %v", v, ok, err)
	}
	if _, ok, _ := b.Get([]byte("c")); ok {
		t.Fatal("batch Get(c) found a key the batch deleted")
	}
	got := collect(t, func(fn func(k, v []byte) error) error { return b.Iter(nil, fn) })
	if want := []string{"a=1", "b=20", "d=4"}; !slices.Equal(got, want) {
		t.Fatalf("batch Iter = %q, want %q", got, want)
	}
	// Not visible outside before Commit.
	if v, _, _ := s.Get([]byte("b")); string(v) != "2" {
		t.Fatalf("uncommitted write visible: Get(b) = %q", v)
	}
	if b.Len() != 3 {
		t.Fatalf("Len = %d, want 3", b.Len())
	}
	must(t, b.Commit())
	got = collect(t, func(fn func(k, v []byte) error) error { return s.Iter(nil, fn) })
	if want := []string{"a=1", "b=20", "d=4"}; !slices.Equal(got, want) {
		t.Fatalf("after Commit Iter = %q, want %q", got, want)
	}
	if err := b.Set([]byte("x"), nil); !errors.Is(err, pebblestore.ErrBatchDone) {
		t.Fatalf("Set after Commit: %v, want ErrBatchDone", err)
	}
	if err := b.Commit(); !errors.Is(err, pebblestore.ErrBatchDone) {
		t.Fatalf("second Commit: %v, want ErrBatchDone", err)
	}
	must(t, b.Close())
}

func TestBatchCloseDiscards(t *testing.T) {
	s := openMem(t).State()
	b := s.NewBatch()
	must(t, b.Set([]byte("k"), []byte("v")))
	must(t, b.Close())
	if _, ok, _ := s.Get([]byte("k")); ok {
		t.Fatal("a closed, uncommitted batch was applied")
	}
}

func TestBatchDeletePrefix(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "p/1", "a", "p/2", "b", "p", "c", "q/1", "d", "p0", "e")
	b := s.NewBatch()
	defer b.Close()
	must(t, b.DeletePrefix([]byte("p/")))
	must(t, b.Set([]byte("p/3"), []byte("new"))) // a later write survives
	must(t, b.Commit())
	got := collect(t, func(fn func(k, v []byte) error) error { return s.Iter(nil, fn) })
	if want := []string{"p=c", "p/3=new", "p0=e", "q/1=d"}; !slices.Equal(got, want) {
		t.Fatalf("after DeletePrefix: %q, want %q", got, want)
	}
}

// The state, stable and log ranges never see each other's keys.
func TestKeyRangeIsolation(t *testing.T) {
	db := openMem(t)
	ls, ss, st := db.LogStore(), db.StableStore(), db.State()

	// Fill state and stable with keys at the extremes of their ranges.
	var kv []string
	for _, k := range []string{"", "\x00", "\x01", "\xff", "\xff\xff\xff\xff\xff\xff\xff\xff\xff", "log", "\x01\x00\x00\x00\x00\x00\x00\x00\x05"} {
		kv = append(kv, k, "state-"+k)
		must(t, ss.Set([]byte(k), []byte("stable-"+k)))
	}
	commit(t, st, kv...)
	checkBounds(t, ls, 0, 0)
	var l raft.Log
	if err := ls.GetLog(5, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(5) with only state/stable keys: %v", err)
	}

	must(t, ls.StoreLogs(entries(3, 9)))
	checkBounds(t, ls, 3, 9)

	// Deleting the whole log leaves state and stable alone.
	must(t, ls.DeleteRange(0, math.MaxUint64))
	checkBounds(t, ls, 0, 0)
	for i := 0; i < len(kv); i += 2 {
		if v, ok, err := st.Get([]byte(kv[i])); err != nil || !ok || string(v) != kv[i+1] {
			t.Fatalf("state %q after log DeleteRange: %q, %v, %v", kv[i], v, ok, err)
		}
		if v, err := ss.Get([]byte(kv[i])); err != nil || string(v) != "stable-"+kv[i] {
			t.Fatalf("stable %q after log DeleteRange: %q, %v", kv[i], v, err)
		}
	}
	must(t, ls.StoreLogs(entries(10, 12)))

	// Restoring and wiping the state leaves the log and stable alone.
	b := st.NewBatch()
	must(t, b.DeletePrefix(nil))
	must(t, b.Commit())
	if n := len(collect(t, func(fn func(k, v []byte) error) error { return st.Iter(nil, fn) })); n != 0 {
		t.Fatalf("state has %d keys after DeletePrefix(nil)", n)
	}
	checkBounds(t, ls, 10, 12)
	if v, err := ss.Get([]byte("\xff")); err != nil || string(v) != "stable-\xff" {
		t.Fatalf("stable after state wipe: %q, %v", v, err)
	}
	// The state sees none of the other ranges' keys.
	commit(t, st, "only", "me")
	got := collect(t, func(fn func(k, v []byte) error) error { return st.Iter(nil, fn) })
	if want := []string{"only=me"}; !slices.Equal(got, want) {
		t.Fatalf("state Iter = %q, want %q", got, want)
	}
}

func TestClosedDB(t *testing.T) {
	db := openMem(t)
	sn := db.State().Snapshot()
	b := db.State().NewBatch()
	must(t, b.Set([]byte("k"), []byte("v")))
	must(t, db.Close())
	must(t, db.Close()) // idempotent
	var l raft.Log
	checks := map[string]error{
		"FirstIndex":    func() error { _, err := db.LogStore().FirstIndex(); return err }(),
		"GetLog":        db.LogStore().GetLog(1, &l),
		"StoreLogs":     db.LogStore().StoreLogs(entries(1, 1)),
		"DeleteRange":   db.LogStore().DeleteRange(1, 2),
		"Stable Set":    db.StableStore().Set([]byte("k"), nil),
		"State Get":     func() error { _, _, err := db.State().Get([]byte("k")); return err }(),
		"State Iter":    db.State().Iter(nil, func(k, v []byte) error { return nil }),
		"Batch Commit":  b.Commit(),
		"Restore":       db.State().Restore(bytes.NewReader(nil)),
		"Snapshot.Get":  func() error { _, _, err := sn.Get([]byte("k")); return err }(),
		"new Snapshot":  func() error { _, _, err := db.State().Snapshot().Get(nil); return err }(),
		"Snapshot.Iter": sn.Iter(nil, func(k, v []byte) error { return nil }),
	}
	for name, err := range checks {
		if !errors.Is(err, pebblestore.ErrClosed) && !errors.Is(err, pebblestore.ErrSnapshotClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	must(t, sn.Close())
	must(t, b.Close())
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	must(t, err)
	must(t, db.LogStore().StoreLogs(entries(1, 20)))
	must(t, db.StableStore().SetUint64([]byte("CurrentTerm"), 9))
	commit(t, db.State(), "k", "v")
	must(t, db.Flush())
	must(t, db.LogStore().StoreLogs(entries(21, 25))) // in the WAL only
	must(t, db.Close())

	db, err = pebblestore.Open(dir, pebblestore.Options{})
	must(t, err)
	defer db.Close()
	checkBounds(t, db.LogStore(), 1, 25)
	for _, i := range []uint64{1, 20, 21, 25} {
		checkLog(t, db.LogStore(), entry(i))
	}
	if n, err := db.StableStore().GetUint64([]byte("CurrentTerm")); err != nil || n != 9 {
		t.Fatalf("CurrentTerm = %d, %v", n, err)
	}
	if v, ok, err := db.State().Get([]byte("k")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("state k = %q, %v, %v", v, ok, err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// entry is a log entry with every field derived from its index.
func entry(i uint64) *raft.Log {
	return &raft.Log{
		Index: i, Term: 1 + i/10, Type: raft.LogCommand,
		Data:       []byte(fmt.Sprintf("payload %d", i)),
		Extensions: []byte{byte(i)},
	}
}

func entries(first, last uint64) []*raft.Log {
	var out []*raft.Log
	for i := first; i <= last; i++ {
		out = append(out, entry(i))
	}
	return out
}

func checkBounds(t testing.TB, s raft.LogStore, first, last uint64) {
	t.Helper()
	f, err1 := s.FirstIndex()
	l, err2 := s.LastIndex()
	if err1 != nil || err2 != nil || f != first || l != last {
		t.Fatalf("FirstIndex, LastIndex = %d, %d (%v, %v); want %d, %d", f, l, err1, err2, first, last)
	}
}

func checkLog(t testing.TB, s raft.LogStore, want *raft.Log) {
	t.Helper()
	var got raft.Log
	if err := s.GetLog(want.Index, &got); err != nil {
		t.Fatalf("GetLog(%d): %v", want.Index, err)
	}
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
		!got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("GetLog(%d) = %+v, want %+v", want.Index, got, want)
	}
}

// Close while other goroutines read and write: every call either works or
// returns ErrClosed; nothing panics on a closed pebble DB.
func TestCloseDuringUse(t *testing.T) {
	db, err := pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem()})
	must(t, err)
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); ; i++ {
				var err error
				switch w % 3 {
				case 0:
					err = db.LogStore().StoreLogs([]*raft.Log{entry(i + uint64(w)<<32)})
				case 1:
					b := db.State().NewBatch()
					_ = b.Set([]byte(fmt.Sprint(i)), []byte("v"))
					err = b.Commit()
					_ = b.Close()
				default:
					sn := db.State().Snapshot()
					_, err = sn.WriteTo(io.Discard)
					_ = sn.Close()
				}
				if err != nil {
					if !errors.Is(err, pebblestore.ErrClosed) {
						errc <- err
					}
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	must(t, db.Close())
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("call racing Close: %v; want nil or ErrClosed", err)
	}
}

// A database written with another layout version is refused, not misread.
func TestOpenRefusesOtherLayout(t *testing.T) {
	fs := vfs.NewMem()
	raw, err := pebble.Open("db", &pebble.Options{FS: fs})
	must(t, err)
	must(t, raw.Set([]byte("\x00layout"), []byte{2}, pebble.Sync))
	must(t, raw.Close())
	if _, err := pebblestore.Open("db", pebblestore.Options{FS: fs}); !errors.Is(err, pebblestore.ErrLayout) {
		t.Fatalf("Open of a layout-2 database: %v, want ErrLayout", err)
	}
	// A fresh database gets the current layout and reopens.
	fresh := vfs.NewMem()
	db, err := pebblestore.Open("db", pebblestore.Options{FS: fresh})
	must(t, err)
	must(t, db.Close())
	db, err = pebblestore.Open("db", pebblestore.Options{FS: fresh})
	must(t, err)
	must(t, db.Close())
}
