package pebblestore_test

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/fedtune/fedtune/ledger/ledgertest"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// openMem opens a store on a fresh in-memory filesystem, closed at cleanup.
func openMem(t testing.TB) *pebblestore.DB {
	t.Helper()
	db, err := pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

func TestLogStoreConformance(t *testing.T) {
	ledgertest.TestLogStore(t, func(t *testing.T) raft.LogStore { return openMem(t).LogStore() })
}

func TestStableStoreConformance(t *testing.T) {
	ledgertest.TestStableStore(t, func(t *testing.T) raft.StableStore { return openMem(t).StableStore() })
}

// On a real directory as well: pebble's file handling differs from MemFS.
func TestLogStoreConformanceDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	ledgertest.TestLogStore(t, func(t *testing.T) raft.LogStore {
		db, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db.LogStore()
	})
}
