// Package ledger holds the pure logic of fedtune's permissioned ledger: the
// identities that sign transactions, the genesis file, DSSE transaction
// envelopes and their typed payloads, blocks and their deterministic binary
// encoding, RFC 6962 Merkle inclusion proofs over a block's transactions, the
// records the ledger's state holds (members, models, datasets, jobs, rounds,
// lineage, nodes) and the error types of a rejection or a broken chain. It
// imports neither pebble nor raft, so every role can link it: the
// replicated state machine that checks transactions and keeps the state
// lives in ledger/fsm, the raft node and its gRPC service in ledger/node,
// the client of that service in ledger/client, and the pebble-backed
// stores in ledger/pebblestore.
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
//	DatasetPublished   trainer (the signed publication manifest's owner)
//	UpdateSubmitted    trainer (one that the round selected)
//	UpdateRejected     aggregator (one the job's recipe designates), or
//	                   verifier (one the job's verify rule names, for a
//	                   drawn update, naming the step)
//	SubmissionsClosed  coordinator (the job's owner; a job with verify)
//	UpdateVerified     verifier (one the job's verify rule names)
//	RoundCommitted     aggregator (one the job's recipe designates)
//	RoundFailed        aggregator (one the job's recipe designates)
//	RoundEvaluated     coordinator (the job's owner; a committed round's
//	                   held-out eval loss and contribution scores)
//	JobCancelled       coordinator (the job's owner; once: fails the open
//	                   round with the reason, no round opens after it)
//	NodeAdded          admin
//	NodePromoted       admin
//	NodeRemoved        admin
//	DatasetAttested    auditor (a signed claim about a dataset, e.g. a
//	                   personal-data scan; see DatasetAttested for why
//	                   only auditors)
//	(none)             inference: serves a committed model and signs
//	                   receipts for its answers (inference/receipt)
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
// (the FSM's Nonce). Digests (models, datasets, updates, configs) are 64 lowercase
// hex characters: the SHA-256 of the artifact.
//
// # Blocks
//
// One raft log entry carries one Proposal (proposer ID, proposer's clock, the
// batched envelopes, the proposer's signature). The FSM (ledger/fsm) checks
// each transaction against the state left by the ones before it; invalid
// ones are left out of the block, each with its *TxError. A
// transaction whose hash is already on the chain (a proposal replayed after a
// leader change) is dropped with CodeDuplicate; a proposal in which no
// transaction is valid produces no block at all, so a replayed proposal
// applies exactly once. The block time is max(previous time + 1, proposed
// time), so block times strictly increase whatever the proposer's clock says.
//
// The header (Header) holds height, previous block hash, tx root (the RFC 6962
// Merkle tree hash over the transaction hashes, computed with
// github.com/transparency-dev/merkle), state hash (SHA-256 of the previous
// state hash and the block's sorted write set), time and
// proposer. Block hash = SHA-256 of EncodeHeader. Height 0 is the genesis
// block, which records the genesis members and policy.
//
// # Ledger nodes
//
// The nodes that replicate the chain are a state of the ledger too, changed
// only by admin-signed transactions: NodeAdded (a node key with its raft and
// gRPC addresses, as a non-voter), NodePromoted (to voter) and NodeRemoved.
// The genesis file's nodes are voters from height 0 without a stored record
// (so the genesis hash and the state hash at genesis hold no node record); a record is written when a node is added, promoted or removed
// (the FSM's NodeMember and Nodes). A removed key cannot be added again, and the
// last voting node cannot be removed. The raft leader carries the records
// out in raft's configuration (ledger/node), so raft membership follows the
// chain and nothing else.
//
// # Round recipes
//
// A job's rules are a RoundRecipe, committed once in a coordinator-signed
// JobRegistered before the job's first round; the signer owns the job. A
// separate transaction, rather than fields of the first RoundOpened, keeps
// one record that never changes and that every later transaction of the
// job is checked against (RoundOpened has no special first case, and a
// recipe cannot differ between rounds), and lets the aggregator, artifact
// store and auditors read the job's rules and designated aggregators
// (the FSM's Job query) before any round exists. The state machine
// (ledger/fsm) enforces the recipe; a RoundRecipe validates itself
// (Validate) and checks a commit's parameters (CheckCommitParams).
//
// The recipe records the DP mechanism's parameters (clip, noise
// multiplier, sampling) but never a noise seed: the aggregator's noise
// comes from crypto/rand.
//
// # Spot checks
//
// A recipe with a VerifyRule (fraction, verifiers, suspension policy) has
// verifier members replay a random fraction of its updates before a round
// commits. The job's coordinator ends a round's submissions with
// SubmissionsClosed; the hash of the block holding it is the round's draw
// seed, and an update is drawn when Drawn(seed, job, round, trainer,
// fraction) holds (the FSM's Round query shows the seed and each update's
// Drawn). Every update of such a job must name one of its published
// datasets, so that any can be replayed without a trainer's private data
// and none escapes the draw by claiming some. A verifier
// the rule names then signs, in a later block, UpdateVerified (its replay
// matched bit for bit) or UpdateRejected with Step (the first differing
// step). The FSM records each verdict on the update (Update.Verdicts) and
// settles the update once the rule's quorum (VerifyRule.Quorum, default
// 1) agrees: Quorum passes pass it (VerifiedBy), Quorum rejections naming
// the same step reject it (Rejected, RejectStep), and a rejection keeps
// the trainer out of the job's next rounds by the rule's policy. The FSM
// admits a verdict only from a named verifier, for a drawn, unsettled
// update of an open, closed-for-submissions round, one per verifier (a
// second one, or a changed mind, is refused); it refuses an
// UpdateSubmitted after the close and a RoundCommitted that counts a
// drawn update not passed. A verifier's rejection is admitted also for a
// drawn update the aggregator rejected (without a step), so that the
// aggregator's rejection does not spare a cheater its suspension; a
// suspended trainer can neither submit to nor be committed in a round of
// the job that was already open (rounds may overlap).
//
// Once a round's submissions are closed its draw stands. Ending the round
// (RoundFailed, or a RoundCommitted that leaves a drawn update out after
// the aggregator's rejection) does not end its spot checks: the FSM still
// admits verdicts on its drawn, unsettled updates until the verdict
// window ends, at the time of the block that closed the submissions plus
// VerifyRule.Timeout (with no Timeout, plus the round's span from its
// opening block to its deadline; the Round query shows it as
// VerdictsUntil). A rejection that lands late suspends the trainer
// exactly as a timely one does (a suspension is never shortened by a
// rejection of an earlier round), so the coordinator or aggregator cannot
// spare a drawn cheater by failing the round and giving it a fresh draw:
// the job's next RoundOpened that selects it is refused. A coordinator
// reads the suspensions from the ledger (the Suspensions query) before it
// opens a round. A drawn update that no quorum judges by the end of the
// window stays unverified, with the consequences it has in a committed
// round: it counts in no model (a failed round commits none; a commit
// must leave it out, after an UpdateRejected), its trainer is not
// suspended, and verdicts on it are refused from then on.
//
// What a lying verifier can do: with quorum q and n verifiers named, a
// minority of fewer than q liars cannot reject an honest update (their
// rejections never reach q, however they pick the step) and cannot pass
// a dishonest one (their passes never reach q); they can only delay a
// verdict, and only when the honest verifiers number fewer than q, so
// that the update stays unsettled and the coordinator rejects it as
// unverified at the verify timeout: choose n ≥ 2q-1 so that the honest
// majority settles every update alone. Honest verifiers agree bit for bit
// (replay is deterministic), so their rejections name the same step. q
// or more colluding liars decide, as one verifier does at quorum 1; and
// a liar's verdict stays on the chain under its key for auditors
// (fedtune audit replay re-judges it).
//
// Who could steer the draw: not a trainer, which submits before the
// closing block exists (a submission in that block cannot know its hash,
// and a submission after it is refused); not the coordinator, which
// chooses only when to close, once per round, without seeing the hash;
// the raft leader that builds the closing block could grind its hash (by
// ordering the txs it holds or its clock) to spare a colluding trainer.
// That is the trust the design already gives ledger node operators over
// ordering (Raft tolerates crashes, not lies); a fraction of 1 leaves
// nothing to steer, and a smaller one bounds what a leader gains to
// skipping the draw for some updates, never to passing a checked one.
//
// When the coordinator may close: not before the round's deadline (by
// block time, the clock that also ends UpdateSubmitted) while a selected
// trainer that could still submit (a current trainer member not
// suspended from the job) has no update; so a coordinator cannot shut
// out a trainer by closing early. A trainer's reported failure is not on
// the ledger, so the coordinator then waits for the deadline. The raft
// leader stamps block times, within the policy's max_clock_skew of the
// replicas' clocks: it can end a round that much early, for the close as
// for the updates, which is the trust it already holds over the deadline.
//
// What every update of such a job carries: a training commitment of
// exactly VerifyRule.Steps steps that discloses each step's digest
// (TrainingCommitment.StepDigests), so that a verifier names the first
// differing step without the trainer's help. The FSM refuses, at
// JobRegistered, a rule whose updates would then not fit the policy's
// max_tx_bytes (CheckDisclosureFits; about 2900 steps fit the default
// 256 KiB, all MaxDisclosedSteps a 1 MiB policy).
package ledger
