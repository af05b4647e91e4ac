// Package node runs a fedtune ledger node: a hashicorp/raft replica whose
// log, stable store and FSM state live in one pebble database
// (ledger/pebblestore), whose FSM is fsm.FSM, and which serves the
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
//     A node accepts raft connections only from voting nodes (a leader or
//     candidate dials; a non-voter never needs to), and it closes the open
//     inbound connections of a node that stops being a voter (NodeRemoved)
//     within 300 ms of applying that. Each raft entry is a proposal signed
//     by its proposer's node key; the FSM refuses any other (see
//     ledger.Proposal), so a peer on the transport cannot speak for another
//     node.
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
// listed in the genesis file's nodes or added by a NodeAdded, and not
// removed. A genesis that lists no nodes pins nothing: New refuses it
// unless the node config sets allow_unpinned (development only).
//
// # Writes
//
// Every node first admits what is submitted to it (fsm.FSM.Admit: size,
// signature, a current member as signer, its role, a nonce within
// fsm.NonceWindow above its last): a refused tx is answered at once and
// never forwarded, queued or proposed, so a stranger's tx is never
// replicated. A follower whose state may lag (an unknown signer, a far
// nonce) leaves that decision to the leader, which admits again before it
// queues; it does so for an unknown signer only when the caller is a
// member or node here or signed the tx with its own TLS key (a new
// member's first tx), so that a stranger cannot relay txs of made-up keys
// to the leader. Each caller is held to the Submit size and rate limits of
// the node config (LimitsConfig): over them, ResourceExhausted. A caller
// is named by its TLS key only when that key is an active member or a
// ledger node, else by its host; callers that are neither also share one
// budget (limits.non_member_*), and the limiter map is bounded
// (limits.max_callers). The txs admitted are forwarded over gRPC to the
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
// that the history forked; client.VerifyFork checks such a pair.
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
// before upgrading its leader, or it removes them as unknown servers.) A
// joining node starts with "join: ADDR" (no raft state) and waits for an
// admin's NodeAdded; until that is applied the cluster refuses its
// connections, so it retries telling that node its addresses (Peers). A node learns the gRPC
// addresses of its peers from the Peers RPC, where each entry is signed by
// the node it describes (over chain ID, node ID, addresses and a sequence
// number; the newest wins) and is checked before it is saved; its config's
// peers only give hints, used while no signed entry is known. It keeps them
// in peers.json in its data directory.
//
// The FSM refuses proposals from non-voting nodes and proposals dated more
// than the policy's max_clock_skew ahead (see package ledger, "Proposers
// and time"); fedtune_ledger_refused_total{reason} counts them with the
// txs and requests refused before a proposal. StreamBlocks sends at most
// limits.max_range blocks per call without follow (Client.Blocks asks
// again) and each caller holds at most limits.max_streams streams.
//
// Reads (Query, GetTx, GetBlock, StreamBlocks calls, Status) are held to
// a per-caller rate (limits.query_rate, query_burst), callers named as for
// Submit; callers that are no member or node also share one read budget
// (limits.non_member_query_rate, non_member_query_burst), which also paces
// the blocks streamed to them. Over a limit: ResourceExhausted naming it
// (fedtune_ledger_refused_total{reason="read_rate_limited"} and
// "read_rate_limited_non_members"); fedtune_ledger_reads_total{rpc,
// caller} counts the reads admitted. Ledger nodes are not limited, and
// the ledger client waits out a refusal instead of failing. A listing
// query (QUERY_KIND_PUBLISHED_DATASETS) returns pages of at most
// limits.max_range entries and MaxPageBytes of manifests.
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
// Clients talk to a node with ledger/client (Dial, DialPinned, Signer,
// the typed queries); the checkpoint format nodes sign is
// client.Checkpoint. A rejected tx's Submit result carries the ledger's
// typed reason (TxResult.error, a ledgerv1.TxError), and a node that ends
// a call because of a rejection attaches the same message as a gRPC status
// detail (client.StatusError), so clients never parse a reason string.
// A Query may name a min_height (client.Client.QueryAt): the node answers
// once it has applied that height, waiting at most MaxQueryWait (and the
// call's deadline), else Unavailable; so a reader can ask for what a
// writer saw committed through another node, without polling.
package node
