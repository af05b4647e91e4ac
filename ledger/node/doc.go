// Package node runs a fedtune ledger node: a hashicorp/raft replica whose
// log, stable store and FSM state live in one pebble database
// (ledger/pebblestore), whose FSM is ledger.FSM, and which serves the
// fedtune.ledger.v1.Ledger gRPC service (api/ledger/v1) and a Prometheus
// /metrics endpoint.
//
// # Transport and who may call what
//
// Everything goes over TLS 1.3 with certificates made from ed25519 ledger
// keys (internal/tlsid); a peer's identity is the ID of the key it proved
// in the handshake. There is no plain-text mode.
//
//   - Raft runs over mutual TLS (a raft.StreamLayer): both ends must prove
//     a ledger node's key, or the handshake fails before raft reads a byte.
//   - The gRPC service accepts any key. The client RPCs (Submit, GetBlock,
//     StreamBlocks, GetTx, Query, Status) are open: what a tx may do is
//     decided by the key that signed it. Join and Remove need a caller
//     authenticated by its key.
//   - The node-to-node RPCs are served to ledger nodes only
//     (PermissionDenied otherwise): forwarded Submits, Joins and Removes
//     (hops > 0), GetCheckpoint and Peers. A node dials another by its ID
//     and refuses a server that does not prove that ID's key.
//
// Whether a key is a ledger node is decided in one place, Node.isNode:
// today, listed in the genesis file's nodes (a genesis that lists none
// pins nothing, and New warns).
//
// # Writes
//
// Every transaction submitted to any node is forwarded over gRPC to the
// leader. The leader batches pending transactions into one ledger.Proposal
// (bounded by the genesis policy's MaxBlockTxs, MaxBlockBytes and
// BlockInterval; proposed at once when no earlier proposal is still in
// raft), appends it to the raft log with raft.Apply, and answers
// each submitter with its transaction's fate: committed at a height, or
// rejected with the FSM's reason. A write interrupted by a leadership change
// comes back as TX_STATUS_UNKNOWN; resubmitting it is safe because the FSM
// deduplicates transactions by hash, and a node answers a resubmitted
// committed transaction with its height.
//
// # Checkpoints
//
// Raft tolerates crashes, not lies. After applying a block every node signs
// a Checkpoint (chain ID, height, block hash) with its node key. GetBlock
// gathers the checkpoints of the other nodes in the raft configuration over
// gRPC, and a client may demand a minimum number of them. Gathers are
// shared per height and bounded (a few heights at once, each in a few
// seconds), so that GetBlock calls cannot multiply the nodes' work. Two valid
// checkpoints for one chain and height with different block hashes prove
// that the history forked; VerifyFork checks such a pair.
//
// # Membership
//
// A node joins as a raft non-voter, and is promoted to voter once it has
// caught up (raft AddNonvoter, then AddVoter); RemoveServer takes a node
// out. Both are served over gRPC (Join, Remove) and forwarded to the leader.
// A node learns the gRPC addresses of its peers from the Peers RPC, where
// each entry is signed by the node it describes (over chain ID, node ID,
// addresses and a sequence number; the newest wins) and is checked before
// it is saved; its config's peers and Join requests only give hints, used
// while no signed entry is known. It keeps them in peers.json in its data
// directory.
//
// # Data directory
//
//	genesis.yaml   the chain's genesis file, copied there by Init
//	pebble/        raft log, raft stable store and FSM state (pebblestore)
//	snapshots/     raft snapshots (raft.FileSnapshotStore)
//	peers.json     node ID → raft and gRPC addresses (signed entries, hints)
//
// Usage:
//
//	cfg, err := node.LoadConfig("node.yaml")
//	n, err := node.New(cfg, node.Options{Logger: log})
//	err = n.Run(ctx) // until ctx is cancelled
//
// Clients use Dial (TLS as a key, optionally pinning the server's key),
// which returns a Client with Submit, SubmitWait, Block, Blocks, Tx, Query,
// Status, Join and Remove. SubmitWait reports a commit only once the tx is
// shown in the named block with a Merkle inclusion proof that verifies.
package node
