// Package ledgertest holds conformance suites for the storage seams of the
// ledger, in the style of testing/fstest.TestFS: TestLogStore checks a
// raft.LogStore and TestStableStore a raft.StableStore against the behaviour
// hashicorp/raft relies on (and that its InmemStore and raft-boltdb show).
//
// A store's own tests call them with a constructor for a fresh, empty store:
//
//	func TestLogStore(t *testing.T) {
//		ledgertest.TestLogStore(t, func(t *testing.T) raft.LogStore {
//			db := openTestDB(t)
//			return db.LogStore()
//		})
//	}
//
// The suites are themselves checked against raft.NewInmemStore().
//
// Twin is a ledger in memory for the tests of the ledger's clients (the
// coordinator's service): the real FSM on pebble's vfs.NewMem, one block
// per Submit, block times from a clock the test controls, no raft and no
// socket.
//
//	tw, err := ledgertest.NewTwin(genesis, fakeClock.Now)
//	h, err := tw.Submit(trainerKey, ledger.UpdateSubmitted{...})
//	r, err := tw.FSM().Round(job, 1)
package ledgertest
