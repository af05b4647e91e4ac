package ledgertest

import (
	"bytes"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// TestStableStore runs the raft.StableStore conformance suite. newStore must
// return a fresh, empty store for each call; each subtest gets its own.
func TestStableStore(t *testing.T, newStore func(t *testing.T) raft.StableStore) {
	t.Helper()
	for _, tc := range stableStoreCases {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

var stableStoreCases = []struct {
	name string
	fn   func(t *testing.T, s raft.StableStore)
}{
	{"MissingKey", testStableMissing},
	{"SetGet", testStableSetGet},
	{"Uint64", testStableUint64},
	{"Overwrite", testStableOverwrite},
	{"KeysAreIndependent", testStableIndependent},
	{"BinaryKeysAndValues", testStableBinary},
	{"Concurrent", testStableConcurrent},
}

// raft's own stable keys.
var (
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteTerm = []byte("LastVoteTerm")
	keyLastVoteCand = []byte("LastVoteCand")
)

// isNotFound reports whether err is what raft takes for a missing key: it
// compares err.Error() with "not found" (raft.go, api.go).
func isNotFound(err error) bool { return err != nil && err.Error() == "not found" }

func testStableMissing(t *testing.T, s raft.StableStore) {
	for _, k := range [][]byte{keyCurrentTerm, keyLastVoteCand, []byte("never-set")} {
		v, err := s.Get(k)
		if !isNotFound(err) {
			t.Errorf("Get(%q) of a missing key: %q, %v; want an error reading \"not found\"", k, v, err)
		}
		// InmemStore returns 0, nil; raft-boltdb returns 0, "not found".
		// raft accepts both for CurrentTerm and LastVoteTerm.
		n, err := s.GetUint64(k)
		if n != 0 || (err != nil && !isNotFound(err)) {
			t.Errorf("GetUint64(%q) of a missing key: %d, %v; want 0 and nil or \"not found\"", k, n, err)
		}
	}
}

func mustSet(t *testing.T, s raft.StableStore, k, v []byte) {
	t.Helper()
	if err := s.Set(k, v); err != nil {
		t.Fatalf("Set(%q): %v", k, err)
	}
}

func checkStable(t *testing.T, s raft.StableStore, k, want []byte) {
	t.Helper()
	got, err := s.Get(k)
	if err != nil {
		t.Fatalf("Get(%q): %v", k, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%q) = %q, want %q", k, got, want)
	}
}

func checkUint64(t *testing.T, s raft.StableStore, k []byte, want uint64) {
	t.Helper()
	got, err := s.GetUint64(k)
	if err != nil {
		t.Fatalf("GetUint64(%q): %v", k, err)
	}
	if got != want {
		t.Fatalf("GetUint64(%q) = %d, want %d", k, got, want)
	}
}

func testStableSetGet(t *testing.T, s raft.StableStore) {
	mustSet(t, s, keyLastVoteCand, []byte("node-2"))
	checkStable(t, s, keyLastVoteCand, []byte("node-2"))
	big := bytes.Repeat([]byte("x"), 1<<20)
	mustSet(t, s, []byte("big"), big)
	checkStable(t, s, []byte("big"), big)
}

func testStableUint64(t *testing.T, s raft.StableStore) {
	for _, v := range []uint64{0, 1, 255, 256, 1 << 40, math.MaxUint64} {
		if err := s.SetUint64(keyCurrentTerm, v); err != nil {
			t.Fatalf("SetUint64(%d): %v", v, err)
		}
		checkUint64(t, s, keyCurrentTerm, v)
	}
}

func testStableOverwrite(t *testing.T, s raft.StableStore) {
	mustSet(t, s, keyLastVoteCand, []byte("a-much-longer-candidate-name"))
	mustSet(t, s, keyLastVoteCand, []byte("b"))
	checkStable(t, s, keyLastVoteCand, []byte("b"))
	for term := uint64(1); term <= 20; term++ {
		if err := s.SetUint64(keyCurrentTerm, term); err != nil {
			t.Fatalf("SetUint64: %v", err)
		}
	}
	checkUint64(t, s, keyCurrentTerm, 20)
}

func testStableIndependent(t *testing.T, s raft.StableStore) {
	if err := s.SetUint64(keyCurrentTerm, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64(keyLastVoteTerm, 6); err != nil {
		t.Fatal(err)
	}
	mustSet(t, s, keyLastVoteCand, []byte("n1"))
	// Keys that share a prefix with, or extend, another key.
	mustSet(t, s, []byte("Current"), []byte("short"))
	mustSet(t, s, []byte("CurrentTermX"), []byte("long"))
	checkUint64(t, s, keyCurrentTerm, 7)
	checkUint64(t, s, keyLastVoteTerm, 6)
	checkStable(t, s, keyLastVoteCand, []byte("n1"))
	checkStable(t, s, []byte("Current"), []byte("short"))
	checkStable(t, s, []byte("CurrentTermX"), []byte("long"))
}

func testStableBinary(t *testing.T, s raft.StableStore) {
	k := []byte{0x00, 0xff, 0x01, 0x00}
	v := []byte{0x00, 0x00, 0xff}
	mustSet(t, s, k, v)
	checkStable(t, s, k, v)
	if _, err := s.Get([]byte{0x00, 0xff, 0x01}); !isNotFound(err) {
		t.Fatalf("Get of a proper prefix of a stored key: err = %v, want \"not found\"", err)
	}
}

func testStableConcurrent(t *testing.T, s raft.StableStore) {
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := []byte(fmt.Sprintf("worker-%d", w))
			for i := range uint64(50) {
				if err := s.SetUint64(k, i); err != nil {
					errc <- err
					return
				}
				got, err := s.GetUint64(k)
				if err != nil || got != i {
					errc <- fmt.Errorf("GetUint64(%q) = %d, %v; want %d", k, got, err, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
