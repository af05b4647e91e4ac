// Package ledger holds the pure logic of fedtune's permissioned ledger: the
// identities that sign transactions, the genesis file, DSSE transaction
// envelopes and their typed payloads, blocks and their deterministic binary
// encoding, RFC 6962 Merkle inclusion proofs over a block's transactions, the
// replicated state machine (FSM) that raft drives, the queries served from its
// state (blocks, transactions with proofs, members, models, datasets, rounds,
// model lineage) and the offline chain verifier. It does no networking: the
// raft node, block batching, checkpoint cosigning and the gRPC service live in
// ledger/node; the pebble-backed stores live in ledger/pebblestore.
//
// # Identities
//
// Every participant holds an ed25519 key kept as a PKCS#8 PEM file (mode
// 0600). Its ID is the lowercase hex SHA-256 of the raw 32-byte public key
// (KeyID). A member has one role:
//
//	tx type            signed by
//	MemberAdded        admin
//	MemberRemoved      admin
//	ModelRegistered    coordinator
//	JobRegistered      coordinator (becomes the job's owner)
//	RoundOpened        coordinator (the job's owner)
//	DatasetRegistered  trainer
//	UpdateSubmitted    trainer (one that the round selected)
//	UpdateRejected     aggregator (one the job's recipe designates)
//	RoundCommitted     aggregator (one the job's recipe designates)
//	RoundFailed        aggregator (one the job's recipe designates)
//	NodeAdded          admin
//	NodePromoted       admin
//	NodeRemoved        admin
//	(none)             auditor: reads only
//
// # Transactions
//
// A transaction is a DSSE envelope (Envelope) in its JSON form
//
//	{"payloadType":"application/vnd.fedtune.tx+json","payload":"<base64>","signatures":[{"keyid":"<signer ID>","sig":"<base64>"}]}
//
// whose single signature is ed25519 over PAE(payloadType, payload) as DSSE
// defines it ("DSSEv1" SP LEN(type) SP type SP LEN(body) SP body), computed
// over the exact payload bytes carried; nothing is re-encoded before
// verifying. The ledger accepts an envelope only in the canonical byte form
// that Envelope.Encode writes (fields in that order, standard padded base64,
// no whitespace), so a transaction has exactly one encoding and one hash
// (TxHash = SHA-256 of the envelope bytes).
//
// The payload is a JSON object decoded strictly, so that the signed bytes
// have one reading for every reader (internal/strictjson): field names match
// exactly (not case-insensitively, as encoding/json would), a name given
// twice in one object, two map keys that differ only in case, an unknown
// field, invalid UTF-8 and trailing data are all errors (CodeMalformed):
//
//	{"chain_id":"…","signer":"<ID>","nonce":7,"type":"RoundOpened","body":{…}}
//
// Names, IDs and free text (job IDs, model, dataset and member names,
// licences, sources, strategies, reasons, metric and parameter keys) must be
// valid UTF-8 without control, bidi (U+061C, U+200E/F, U+202A–U+202E,
// U+2066–U+2069) or zero-width (U+200B–U+200D, U+2060, U+FEFF) characters;
// the error names the field and the character's position (CodeInvalid).
// SignTx encodes with encoding/json, so every valid transaction keeps its
// bytes and hash (testdata/tx.golden). DecodeTxBody decodes a body alone,
// as DecodeTx does, for tools that sign bodies given to them.
//
// The nonce is per signer and strictly increasing: a transaction is accepted
// only if its nonce is greater than the last nonce applied for its signer
// (FSM.Nonce). Digests (models, datasets, updates, configs) are 64 lowercase
// hex characters: the SHA-256 of the artifact.
//
// # Blocks
//
// One raft log entry carries one Proposal (proposer ID, proposer's clock, the
// batched envelopes, the proposer's signature). The FSM checks each transaction against the state left
// by the ones before it; invalid ones are left out of the block and their
// reasons are returned in ApplyResult.Results as *TxError values. A
// transaction whose hash is already on the chain (a proposal replayed after a
// leader change) is dropped with CodeDuplicate; a proposal in which no
// transaction is valid produces no block at all, so a replayed proposal
// applies exactly once. The block time is max(previous time + 1, proposed
// time), so block times strictly increase whatever the proposer's clock says.
//
// The header (Header) holds height, previous block hash, tx root (the RFC 6962
// Merkle tree hash over the transaction hashes, computed with
// github.com/transparency-dev/merkle), state hash (SHA-256 of the previous
// state hash and the block's sorted write set, see WriteSet), time and
// proposer. Block hash = SHA-256 of EncodeHeader. Height 0 is the genesis
// block, which records the genesis members and policy.
//
// # State
//
// The FSM keeps everything in a *pebblestore.State key range, written one
// pebble batch per block: the application state (members, nonces, models,
// datasets, rounds, updates, lineage records), whose writes form the state
// hash, and the chain itself (blocks, tx index, head) with the
// digest-first index of submitted updates (FSM.UpdatesByDigest, a prefix
// scan), which do not.
// Each committed model has a lineage link (its round, contributors with
// weights and datasets, rejected updates, base model). Links are stored in
// segments: the first model committed on a committed model continues its
// segment at the next depth, so the rounds of a job sit under consecutive
// keys and a lineage is one range scan per segment, not one lookup per round:
// a model 10,000 rounds deep answers in about 17 ms (BenchmarkLineage10000).
//
// # Ledger nodes
//
// The nodes that replicate the chain are a state of the ledger too, changed
// only by admin-signed transactions: NodeAdded (a node key with its raft and
// gRPC addresses, as a non-voter), NodePromoted (to voter) and NodeRemoved.
// The genesis file's nodes are voters from height 0 without a stored record
// (so a genesis hash and state hash are what they were before node records
// existed); a record is written when a node is added, promoted or removed
// (FSM.NodeMember, FSM.Nodes). A removed key cannot be added again, and the
// last voting node cannot be removed. The raft leader carries the records
// out in raft's configuration (ledger/node), so raft membership follows the
// chain and nothing else.
//
// # Proposers and time
//
// A proposal (one raft entry) is refused as a whole, with no block and no
// state change on any replica (ApplyResult.Err wraps ErrProposalRefused),
// when
//
//   - it is not signed, for this chain, by the node key of the proposer it
//     names (ErrProposalSignature; checked first). The leader signs each
//     proposal (SignProposal, ed25519 over ProposalDigest: a
//     domain-separated hash of the chain ID and the unsigned proposal's
//     encoding), and the key must be the proposer's: the genesis file's or
//     its NodeAdded record's. So a peer that can write raft entries cannot
//     name another node as proposer. Blocks do not keep the signature:
//     ApplyProposal (the replay of committed blocks by VerifyChain and
//     audit) checks one only when present; who proposed a committed block
//     is vouched for by the nodes' cosigned checkpoints. Raft entries of the
//     first, unsigned format (LogTypeProposal) are refused: upgrade a
//     cluster with every node stopped after it applied its whole log.
//   - its proposer is not a voting node: not a genesis node or a promoted
//     one, or removed (ErrProposerNotVoter). This reads only the replicated
//     state, so every replica decides alike. A genesis without nodes (for
//     development) pins no proposers: then only removed nodes are refused.
//   - its time is more than the genesis policy's max_clock_skew (default
//     30s) ahead of a reference time (ErrProposalTime). Only a time that
//     moves the chain's time forward is checked (one at or below the
//     previous block's time + 1 does not set the block time), so blocks
//     forced above their proposals' times (a genesis_time ahead) stay
//     valid, also when VerifyChain replays them.
//
// Raft needs a deterministic FSM, and a replica's own clock is not: an
// entry refused as too far ahead today would pass a year later, so a node
// that replays its log late could apply a block the others refused. The
// reference is therefore min(replica clock, the entry's AppendedAt), where
// AppendedAt is the time the leader stamped on the raft entry, stored with
// it in the log and replayed unchanged:
//
//   - An honest leader stamps both times from one clock, so the proposal is
//     within the skew of AppendedAt; a replica applying it at any later
//     time takes AppendedAt as reference and accepts it, as did those that
//     applied it fresh (their clocks agree with the leader's within the
//     skew). Replays, restarts and lagging nodes decide alike.
//   - A leader whose clock jumped ahead (or a forged entry) stamps both in
//     the future; fresh replicas take their own clock and refuse. A
//     replica would decide otherwise only if it applied that entry after
//     its own clock passed the bad time minus the skew (for a year-2262
//     time: never in practice), and the entry were still in the raft log
//     then (raft compacts applied entries into snapshots, which carry the
//     decision).
//   - A leader cannot dodge the check by back-dating AppendedAt: the
//     reference is the earlier of the two times, so a proposal ahead of its
//     own AppendedAt by more than the skew is refused everywhere, whenever.
//
// What remains depends on clocks being synchronised (NTP) well within
// max_clock_skew. A node whose own clock is off by more than the skew
// decides fresh entries differently from the others: a follower running
// slow refuses what they accept, a leader whose clock jumped accepts its
// own proposal that they refuse. Either way it is the node with the wrong
// clock whose state leaves the majority's; its checkpoints then conflict
// with theirs (ledger/node cosigning, VerifyFork), which names it. Fix its
// clock and rebuild its data directory from the others (a fresh node
// catches up from a raft snapshot). Keep the skew large against clock
// error and small against the damage of a jump.
//
// Block times still only move forward (max(previous + 1, proposal time)),
// so a chain that already holds a bad time (written before this check, or
// by a majority of nodes with broken clocks) cannot heal itself: every
// later block carries that time, and RoundOpened deadlines before it are
// refused. The way back is a new chain, not a rewrite of this one (a ledger
// that an admin could rewind would not be worth auditing): stop the nodes;
// keep the old chain's export ("fedtune audit export") as the audit
// record of everything before; write a new genesis with a new chain_id,
// genesis_time now, and the members and nodes the old chain's state holds
// (members: "fedtune ledger query member"); start the nodes on fresh data
// directories; re-register each job's last committed model as a base
// model (ModelRegistered, source naming the old chain ID and the model's
// height there) and open its next round. Auditors verify the old export and
// the new chain separately; the link between them is the model digest.
// # Round recipes
//
// A job's rules are a RoundRecipe, committed once in a coordinator-signed
// JobRegistered before the job's first round; the signer owns the job. A
// separate transaction, rather than fields of the first RoundOpened, keeps
// one record that never changes and that every later transaction of the
// job is checked against (RoundOpened has no special first case, and a
// recipe cannot differ between rounds), and lets the aggregator, artifact
// store and auditors read the job's rules and designated aggregators
// (FSM.Job) before any round exists. The FSM enforces, besides the checks
// above:
//
//   - RoundOpened: the job is registered and the signer owns it; rounds
//     are numbered 1, 2, 3, … (each the previous plus one); the strategy is
//     the recipe's; the trainer count is within MinTrainers..MaxTrainers;
//     the base model is the one the job's last round left: round 1's is
//     the recipe's BaseModel (any registered model if the recipe records
//     none), a later round's the model the previous round committed, or
//     the previous round's own base if that round failed (so: the last
//     committed model, or round 1's base while none committed).
//   - JobRegistered: the recipe's BaseModel, if set, is a registered model.
//   - UpdateSubmitted: samples is at most the dataset's registered count
//     and the recipe's MaxSamples (if set); the update's digest is no
//     recorded model (registered or committed).
//   - ModelRegistered: the digest is no submitted update (the artifact
//     store gives a model to every member, an update only to those who
//     need it), so a coordinator cannot publish a trainer's update.
//   - UpdateRejected, RoundFailed, RoundCommitted: the signer is one of the
//     recipe's Aggregators.
//   - RoundCommitted: strategy and parameters are the recipe's
//     (RoundRecipe.CheckCommitParams: CommitParams plus a server_state
//     digest); the contributors are exactly the submitted updates that no
//     UpdateRejected rejected (at least MinTrainers); for the
//     sample-weighted strategies (SampleWeighted) each weight is exactly
//     samples / Σ samples as the aggregator computes it; the model's
//     digest is no update first submitted to another round.
//
// The recipe records the DP mechanism's parameters (clip, noise
// multiplier, sampling) but never a noise seed: the aggregator's noise
// comes from crypto/rand.
//
// VerifyChain re-derives a local chain from its genesis: it replays every
// stored block on a fresh in-memory state and compares heights, previous
// hashes, tx roots, signatures, state hashes, times, the tx index and the
// update index, naming the first height that differs in a *VerifyError.
package ledger
