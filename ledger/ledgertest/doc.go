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
package ledgertest
