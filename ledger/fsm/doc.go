// Package fsm is the ledger's replicated state machine: the FSM that raft
// drives (it implements raft.FSM), which checks every transaction of a
// proposal against the state the ones before it left, commits one block
// with its state changes in one pebble batch, and answers the queries
// served from that state (blocks, transactions with proofs, members,
// models, datasets, jobs, rounds, model lineage, updates by digest, ledger
// nodes); and the offline chain verifier (VerifyChain). The transaction,
// block and genesis formats it applies are package ledger's; ledger/node
// runs it under raft.
//
//	st := db.State() // a *pebblestore.State
//	f, err := fsm.New(st, genesis, fsm.Options{Logger: log})
//	res := f.ApplyProposal(ledger.Proposal{Proposer: nodeID, Txs: txs}) // outside raft
//	m, err := f.Model(digest)
//
// A proposal's transactions are checked one by one; invalid ones are left
// out of the block and their reasons are returned in ApplyResult.Results as
// *ledger.TxError values. The nonce of a signer must be above the last one
// applied (FSM.Nonce); Admit checks a tx against the committed state before
// a node proposes it (NonceWindow bounds how far ahead its nonce may be).
//
// # State
//
// The FSM keeps everything in a *pebblestore.State key range (state.go), written one
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
// with theirs (ledger/node cosigning, client.VerifyFork), which names it. Fix its
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
//
// # Round recipes
//
// The FSM enforces a job's RoundRecipe (package ledger), besides the
// checks above:
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
//   - JobCancelled (cancel.go): the job is registered, the signer owns
//     it, and it was not cancelled before; the job's last round, if open,
//     fails (status, closing height, reason "job cancelled: …"; its
//     spot-check close and draw stay as they are), and the job's record
//     keeps the cancellation. A RoundOpened of a cancelled job is refused.
//   - UpdateSubmitted: samples is at most the dataset's registered count
//     and the recipe's MaxSamples (if set); the update's digest is no
//     recorded model (registered or committed). A training commitment, if
//     present, is well formed (ValidateBasic: two SHA-256 digests and 1 to
//     MaxCommittedSteps steps) and is kept with the update's record.
//   - ModelRegistered: the digest is no submitted update (the artifact
//     store gives a model to every member, an update only to those who
//     need it), so a coordinator cannot publish a trainer's update.
//   - UpdateRejected, RoundFailed, RoundCommitted: the signer is one of the
//     recipe's Aggregators (an UpdateRejected may also come from a
//     verifier: see spot checks below).
//   - Spot checks (a recipe with Verify; spotcheck.go): SubmissionsClosed
//     comes from the job's owner, once per open round, and after it no
//     UpdateSubmitted is accepted; before the round's deadline (block
//     time at or before it) it is refused while a selected trainer that
//     could still submit (a current trainer member, not suspended) has no
//     update; every UpdateSubmitted of the job carries a commitment of
//     exactly verify.steps steps that discloses their digests
//     (commitment.step_digests); the hash of its block is the draw seed
//     (ledger.RoundRecipe.DrawnUpdate; the Round query fills DrawSeed and
//     each update's Drawn). UpdateVerified and a verifier's UpdateRejected
//     come from a verifier the rule names, in a later block, for a drawn
//     update not yet settled, one per verifier (recorded in
//     Update.Verdicts); the rejection names a step (1 to the committed
//     steps). The rule's quorum of passes passes the update; its quorum of
//     rejections naming the same step rejects it and writes the trainer's suspension
//     (state key a/vs/<job>\x00<trainer>: the last round it may not be
//     selected for, never lowered by a later tx; the Suspensions query
//     lists them), which RoundOpened checks. RoundCommitted needs the
//     submissions closed and a pass for every drawn contributor. Verdicts
//     are admitted also after the round failed or committed, until the
//     closing block's time plus the rule's timeout (the round's span when
//     none; the Round query fills VerdictsUntil), so that ending a round
//     does not re-roll its draw.
//   - JobRegistered: every verifier a verify rule names is a current
//     verifier member, and an update of verify.steps disclosed steps fits
//     the policy's max_tx_bytes (ledger.CheckDisclosureFits).
//   - RoundCommitted: strategy and parameters are the recipe's
//     (RoundRecipe.CheckCommitParams: CommitParams plus a server_state
//     digest); the contributors are exactly the submitted updates that no
//     UpdateRejected rejected (at least MinTrainers); for the
//     sample-weighted strategies (SampleWeighted) each weight is exactly
//     samples / Σ samples as the aggregator computes it; the model's
//     digest is no update first submitted to another round; every
//     contributor's dataset has a passing attestation for each of the
//     recipe's RequireAttestations (of the kind, by the named auditor or
//     any auditor) as the state holds them at the commit.
//   - DatasetAttested: the dataset is registered; the statement it
//     carries is signed by the tx's signer (checked with its member key)
//     and says exactly what the tx says about exactly this dataset; it
//     replaces the same auditor's earlier attestation of the same kind
//     (state key a/da/<dataset>/<kind>/<auditor>).
//   - RoundEvaluated: the signer owns the job; the round is committed and
//     its committed model is the body's model_digest; no RoundEvaluated of
//     the round came before; every scored trainer is a contributor of the
//     round (each listed once, values finite: checked without state).
//
// # Verifying a chain
//
// VerifyChain re-derives a local chain from its genesis: it replays every
// stored block on a fresh in-memory state and compares heights, previous
// hashes, tx roots, signatures, state hashes, times, the tx index and the
// update index, naming the first height that differs in a *VerifyError.
package fsm
