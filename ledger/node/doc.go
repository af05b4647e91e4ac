// Package node runs a fedtune ledger node: a hashicorp/raft replica whose
// log, stable store and FSM state live in one pebble database
// (ledger/pebblestore), whose FSM is ledger.FSM, and which serves the
// fedtune.ledger.v1.Ledger gRPC service (api/ledger/v1) and a Prometheus
// /metrics endpoint.
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
// gRPC, and a client may demand a minimum number of them. Two valid
// checkpoints for one chain and height with different block hashes prove
// that the history forked; VerifyFork checks such a pair.
//
// # Membership
//
// A node joins as a raft non-voter, and is promoted to voter once it has
// caught up (raft AddNonvoter, then AddVoter); RemoveServer takes a node
// out. Both are served over gRPC (Join, Remove) and forwarded to the leader.
// A node learns the gRPC addresses of its peers from its config, from Join
// requests, and from the Peers RPC, and keeps them in peers.json in its data
// directory.
//
// # Data directory
//
//	genesis.yaml   the chain's genesis file, copied there by Init
//	pebble/        raft log, raft stable store and FSM state (pebblestore)
//	snapshots/     raft snapshots (raft.FileSnapshotStore)
//	peers.json     node ID → raft and gRPC addresses
//
// Usage:
//
//	cfg, err := node.LoadConfig("node.yaml")
//	n, err := node.New(cfg, node.Options{Logger: log})
//	err = n.Run(ctx) // until ctx is cancelled
//
// Clients use Dial, which returns a Client with Submit, Block, Blocks, Tx,
// Query, Status, Join and Remove.
package node
