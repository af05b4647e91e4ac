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
//	RoundOpened        coordinator
//	DatasetRegistered  trainer
//	UpdateSubmitted    trainer (one that the round selected)
//	UpdateRejected     aggregator
//	RoundCommitted     aggregator
//	RoundFailed        aggregator
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
// batched envelopes). The FSM checks each transaction against the state left
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
// hash, and the chain itself (blocks, tx index, head), which does not.
// Each committed model has a lineage link (its round, contributors with
// weights and datasets, rejected updates, base model). Links are stored in
// segments: the first model committed on a committed model continues its
// segment at the next depth, so the rounds of a job sit under consecutive
// keys and a lineage is one range scan per segment, not one lookup per round:
// a model 10,000 rounds deep answers in about 17 ms (BenchmarkLineage10000).
//
// VerifyChain re-derives a local chain from its genesis: it replays every
// stored block on a fresh in-memory state and compares heights, previous
// hashes, tx roots, signatures, state hashes, times and the tx index, naming
// the first height that differs in a *VerifyError.
package ledger
