package ledgertest_test

import (
	"testing"

	"github.com/fedtune/fedtune/ledger/ledgertest"
	"github.com/hashicorp/raft"
)

// The suites are checked against raft's own in-memory store, which raft's
// tests treat as the reference.
func TestInmemLogStore(t *testing.T) {
	ledgertest.TestLogStore(t, func(*testing.T) raft.LogStore { return raft.NewInmemStore() })
}

func TestInmemStableStore(t *testing.T) {
	ledgertest.TestStableStore(t, func(*testing.T) raft.StableStore { return raft.NewInmemStore() })
}
