// Package node runs a fedtune ledger node: a hashicorp/raft replica whose
// log, stable store and FSM state live in one pebble database
// (ledger/pebblestore), whose FSM is ledger.FSM, and which serves the
// fedtune.ledger.v1.Ledger gRPC service (api/ledger/v1) and a Prometheus
// /metrics endpoint.
//
// # Writes
//
// Every node first admits what is submitted to it (ledger.FSM.Admit: size,
// signature, a current member as signer, its role, a nonce within
// ledger.NonceWindow above its last): a refused tx is answered at once and
// never forwarded, queued or proposed, so a stranger's tx is never
// replicated. A follower whose state may lag (an unknown signer, a far
// nonce) leaves that decision to the leader, which admits again before it
// queues. Each caller (its TLS key ID, else its host) is held to the
// Submit size and rate limits of the node config (LimitsConfig): over
// them, ResourceExhausted. The txs admitted are forwarded over gRPC to the
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
// Raft membership follows the ledger's node records (ledger.NodeRecord),
// which only admin-signed NodeAdded, NodePromoted and NodeRemoved
// transactions change. While a node leads it compares raft's configuration
// with them (right after it becomes leader and every 300 ms) and carries
// out what differs: AddNonvoter for an added node, AddVoter for a promoted
// one, RemoveServer for a removed one and, when the genesis lists nodes,
// for a server that is no node of the chain; a leader that is no voting
// node itself hands leadership on. This is idempotent, so a change applied
// just before a leader change is carried out by the next leader. The Join
// and Remove RPCs only answer FailedPrecondition. (A cluster that grew by
// the old Join RPC: submit NodeAdded and NodePromoted for those nodes
// before upgrading its leader, or it removes them as unknown servers.) A joining node starts
// with "join: ADDR" (no raft state): it tells that node its addresses
// (Peers) and waits for an admin's NodeAdded. A node learns the gRPC
// addresses of its peers from its config, from the Peers RPC and from the
// leader that added it, and keeps them in peers.json in its data directory.
//
// The FSM refuses proposals from non-voting nodes and proposals dated more
// than the policy's max_clock_skew ahead (see package ledger, "Proposers
// and time"); fedtune_ledger_refused_total{reason} counts them with the
// txs and requests refused before a proposal. StreamBlocks sends at most
// limits.max_range blocks per call without follow (Client.Blocks asks
// again) and each caller holds at most limits.max_streams streams.
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
// Query and Status (Join and Remove remain for old callers; nodes refuse
// them).
package node
