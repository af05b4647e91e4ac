package ledgertest

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestLogStore runs the raft.LogStore conformance suite. newStore must return
// a fresh, empty store for each call; each subtest gets its own.
func TestLogStore(t *testing.T, newStore func(t *testing.T) raft.LogStore) {
	t.Helper()
	for _, tc := range logStoreCases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

var logStoreCases = []struct {
	name string
	fn   func(t *testing.T, s raft.LogStore)
}{
	{"Empty", testLogEmpty},
	{"StoreGetOne", testLogStoreGetOne},
	{"StoreLogsBatch", testLogStoreBatch},
	{"MissingEntry", testLogMissing},
	{"DeleteRangeHead", testLogDeleteHead},
	{"DeleteRangeTail", testLogDeleteTail},
	{"DeleteRangeAll", testLogDeleteAll},
	{"DeleteRangeBeyondEnds", testLogDeleteBeyond},
	{"Overwrite", testLogOverwrite},
	{"LargeEntries", testLogLarge},
	{"IndexOrderIsNumeric", testLogNumericOrder},
	{"HighIndices", testLogHighIndices},
	{"ConcurrentReaders", testLogConcurrentReaders},
	{"RandomOpsAgainstModel", testLogRandomModel},
}

// entry builds a log entry with every field set from its index and term.
func entry(index, term uint64) *raft.Log {
	return &raft.Log{
		Index:      index,
		Term:       term,
		Type:       raft.LogType(index % 7),
		Data:       []byte(fmt.Sprintf("data-%d-%d", index, term)),
		Extensions: []byte(fmt.Sprintf("ext-%d", index)),
		AppendedAt: time.Unix(1_700_000_000+int64(index), int64(index%1e9)).UTC(),
	}
}

func entries(first, last, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := first; i <= last; i++ {
		out = append(out, entry(i, term))
	}
	return out
}

// sameLog reports how got differs from want, or "" if it does not. Byte
// fields compare by content (nil equals empty) and AppendedAt as an instant.
func sameLog(got, want *raft.Log) string {
	switch {
	case got.Index != want.Index:
		return fmt.Sprintf("Index %d, want %d", got.Index, want.Index)
	case got.Term != want.Term:
		return fmt.Sprintf("Term %d, want %d", got.Term, want.Term)
	case got.Type != want.Type:
		return fmt.Sprintf("Type %v, want %v", got.Type, want.Type)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Sprintf("Data %d bytes %.40q, want %d bytes %.40q", len(got.Data), got.Data, len(want.Data), want.Data)
	case !bytes.Equal(got.Extensions, want.Extensions):
		return fmt.Sprintf("Extensions %q, want %q", got.Extensions, want.Extensions)
	case !got.AppendedAt.Equal(want.AppendedAt):
		return fmt.Sprintf("AppendedAt %v, want %v", got.AppendedAt, want.AppendedAt)
	}
	return ""
}

func mustStore(t *testing.T, s raft.LogStore, logs ...*raft.Log) {
	t.Helper()
	if err := s.StoreLogs(logs); err != nil {
		t.Fatalf("StoreLogs(%d entries): %v", len(logs), err)
	}
}

func mustDelete(t *testing.T, s raft.LogStore, min, max uint64) {
	t.Helper()
	if err := s.DeleteRange(min, max); err != nil {
		t.Fatalf("DeleteRange(%d, %d): %v", min, max, err)
	}
}

// checkBounds checks FirstIndex and LastIndex.
func checkBounds(t *testing.T, s raft.LogStore, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatalf("FirstIndex: %v", err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatalf("LastIndex: %v", err)
	}
	if f != first || l != last {
		t.Fatalf("FirstIndex, LastIndex = %d, %d; want %d, %d", f, l, first, last)
	}
}

func checkGet(t *testing.T, s raft.LogStore, want *raft.Log) {
	t.Helper()
	var got raft.Log
	if err := s.GetLog(want.Index, &got); err != nil {
		t.Fatalf("GetLog(%d): %v", want.Index, err)
	}
	if d := sameLog(&got, want); d != "" {
		t.Fatalf("GetLog(%d): %s", want.Index, d)
	}
}

func checkMissing(t *testing.T, s raft.LogStore, index uint64) {
	t.Helper()
	var got raft.Log
	if err := s.GetLog(index, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(%d) of a missing entry: err = %v, want raft.ErrLogNotFound", index, err)
	}
}

func testLogEmpty(t *testing.T, s raft.LogStore) {
	checkBounds(t, s, 0, 0)
	checkMissing(t, s, 1)
	checkMissing(t, s, 0)
	mustStore(t, s) // an empty batch is fine and changes nothing
	checkBounds(t, s, 0, 0)
}

func testLogStoreGetOne(t *testing.T, s raft.LogStore) {
	want := entry(1, 1)
	if err := s.StoreLog(want); err != nil {
		t.Fatalf("StoreLog: %v", err)
	}
	checkBounds(t, s, 1, 1)
	checkGet(t, s, want)
	// An entry with nothing but its index and term also round-trips.
	bare := &raft.Log{Index: 2, Term: 1}
	mustStore(t, s, bare)
	checkGet(t, s, bare)
	checkBounds(t, s, 1, 2)
}

func testLogStoreBatch(t *testing.T, s raft.LogStore) {
	logs := entries(1, 100, 3)
	mustStore(t, s, logs...)
	checkBounds(t, s, 1, 100)
	for _, l := range logs {
		checkGet(t, s, l)
	}
	mustStore(t, s, entries(101, 164, 4)...)
	checkBounds(t, s, 1, 164)
	checkGet(t, s, entry(164, 4))
}

func testLogMissing(t *testing.T, s raft.LogStore) {
	mustStore(t, s, entries(10, 20, 1)...)
	for _, i := range []uint64{0, 1, 9, 21, 1000, math.MaxUint64} {
		checkMissing(t, s, i)
	}
	mustDelete(t, s, 14, 15)
	checkMissing(t, s, 14)
	checkMissing(t, s, 15)
	checkGet(t, s, entry(13, 1))
	checkGet(t, s, entry(16, 1))
	checkBounds(t, s, 10, 20)
}

func testLogDeleteHead(t *testing.T, s raft.LogStore) {
	mustStore(t, s, entries(1, 50, 1)...)
	mustDelete(t, s, 1, 30) // compaction after a snapshot
	checkBounds(t, s, 31, 50)
	checkMissing(t, s, 30)
	checkGet(t, s, entry(31, 1))
}

func testLogDeleteTail(t *testing.T, s raft.LogStore) {
	mustStore(t, s, entries(1, 50, 1)...)
	mustDelete(t, s, 41, 50) // a follower drops a conflicting suffix
	checkBounds(t, s, 1, 40)
	checkMissing(t, s, 41)
	mustStore(t, s, entries(41, 45, 2)...)
	checkBounds(t, s, 1, 45)
	checkGet(t, s, entry(41, 2))
}

func testLogDeleteAll(t *testing.T, s raft.LogStore) {
	mustStore(t, s, entries(5, 25, 1)...)
	mustDelete(t, s, 5, 25)
	checkBounds(t, s, 0, 0)
	for i := uint64(5); i <= 25; i++ {
		checkMissing(t, s, i)
	}
	mustStore(t, s, entries(100, 101, 2)...) // after a snapshot install
	checkBounds(t, s, 100, 101)
}

func testLogDeleteBeyond(t *testing.T, s raft.LogStore) {
	mustStore(t, s, entries(10, 20, 1)...)
	mustDelete(t, s, 1, 12) // starts before the first entry
	checkBounds(t, s, 13, 20)
	mustDelete(t, s, 18, 1000) // ends after the last entry
	checkBounds(t, s, 13, 17)
	mustDelete(t, s, 13, 17)
	checkBounds(t, s, 0, 0)
}

func testLogOverwrite(t *testing.T, s raft.LogStore) {
	mustStore(t, s, entries(1, 10, 1)...)
	repl := entry(7, 5)
	repl.Data = []byte("replacement")
	mustStore(t, s, repl)
	checkGet(t, s, repl)
	checkBounds(t, s, 1, 10)
	// Within one batch the later entry for an index wins.
	mustStore(t, s, entry(3, 8), entry(3, 9))
	checkGet(t, s, entry(3, 9))
}

func testLogLarge(t *testing.T, s raft.LogStore) {
	rng := rand.New(rand.NewPCG(1, 2))
	var logs []*raft.Log
	for i, n := range []int{0, 1, 4 << 10, 1 << 20, 8 << 20} {
		l := entry(uint64(i+1), 1)
		l.Data = make([]byte, n)
		for j := range l.Data {
			l.Data[j] = byte(rng.Uint32())
		}
		logs = append(logs, l)
	}
	mustStore(t, s, logs...)
	for _, l := range logs {
		checkGet(t, s, l)
	}
}

func testLogNumericOrder(t *testing.T, s raft.LogStore) {
	// Runs across byte boundaries, where little-endian or decimal-string key
	// order would differ from numeric order.
	mustStore(t, s, entries(250, 300, 1)...)
	checkBounds(t, s, 250, 300)
	mustDelete(t, s, 250, 255)
	checkBounds(t, s, 256, 300)
	mustDelete(t, s, 280, 300)
	checkBounds(t, s, 256, 279)
	mustDelete(t, s, 256, 279)
	mustStore(t, s, entries(1<<32-3, 1<<32+3, 2)...)
	checkBounds(t, s, 1<<32-3, 1<<32+3)
	checkGet(t, s, entry(1<<32, 2))
	mustDelete(t, s, 1<<32-3, 1<<32-1)
	checkBounds(t, s, 1<<32, 1<<32+3)
}

// testLogHighIndices stores entries near the top of the index space. (It
// stops short of math.MaxUint64 itself: raft never gets there, and
// InmemStore.DeleteRange loops forever on a range ending at it.)
func testLogHighIndices(t *testing.T, s raft.LogStore) {
	top := uint64(math.MaxUint64 - 1)
	mustStore(t, s, entries(top-5, top, 1)...)
	checkBounds(t, s, top-5, top)
	checkGet(t, s, entry(top, 1))
	mustDelete(t, s, top-1, top)
	checkBounds(t, s, top-5, top-2)
}

func testLogConcurrentReaders(t *testing.T, s raft.LogStore) {
	mustStore(t, s, entries(1, 10, 1)...)
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= 200; i++ {
				var l raft.Log
				idx := 1 + (i+uint64(w))%10
				if err := s.GetLog(idx, &l); err != nil {
					errc <- fmt.Errorf("GetLog(%d): %w", idx, err)
					return
				}
				if d := sameLog(&l, entry(idx, 1)); d != "" {
					errc <- fmt.Errorf("GetLog(%d): %s", idx, d)
					return
				}
			}
		}()
	}
	for i := uint64(11); i <= 60; i++ { // appends while readers read
		if err := s.StoreLogs([]*raft.Log{entry(i, 1)}); err != nil {
			t.Fatalf("StoreLogs(%d): %v", i, err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	checkBounds(t, s, 1, 60)
}

// testLogRandomModel runs seeded random appends, suffix truncations and
// prefix compactions in raft's patterns and checks the store against a map.
func testLogRandomModel(t *testing.T, s raft.LogStore) {
	rng := rand.New(rand.NewPCG(7, 11))
	model := map[uint64]*raft.Log{}
	next, term := uint64(1), uint64(1)
	bounds := func() (lo, hi uint64) {
		for i := range model {
			if lo == 0 || i < lo {
				lo = i
			}
			hi = max(hi, i)
		}
		return lo, hi
	}
	for step := range 300 {
		lo, hi := bounds()
		switch op := rng.IntN(10); {
		case op < 6 || len(model) == 0: // append a batch
			logs := entries(next, next+uint64(rng.IntN(16)), term)
			mustStore(t, s, logs...)
			for _, l := range logs {
				model[l.Index] = l
			}
			next += uint64(len(logs))
		case op < 8: // a new leader truncates a suffix
			cut := lo + uint64(rng.Int64N(int64(hi-lo+1)))
			mustDelete(t, s, cut, hi)
			for i := cut; i <= hi; i++ {
				delete(model, i)
			}
			next, term = cut, term+1
		default: // compaction after a snapshot
			cut := lo + uint64(rng.Int64N(int64(hi-lo+1)))
			mustDelete(t, s, lo, cut)
			for i := lo; i <= cut; i++ {
				delete(model, i)
			}
		}
		lo, hi = bounds()
		checkBounds(t, s, lo, hi)
		if step%25 == 0 {
			for _, l := range model {
				checkGet(t, s, l)
			}
		}
	}
}
