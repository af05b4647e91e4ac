// Package client is how a process that is not a ledger node talks to the
// ledger: the gRPC client of a ledger node's service, checked as far as a
// client can check (block hashes, tx roots, Merkle inclusion proofs, node
// cosignatures), the Signer that submits a key's transactions with its
// nonce, the typed state queries, the checkpoint format the nodes cosign,
// and the join challenge a trainer signs. It imports neither pebble nor
// raft: coordinators, trainers, aggregators and auditors link it without
// the server (ledger/node) or the state machine.
//
// # Dialing
//
// Dial connects over TLS 1.3 as a key (internal/tlsid), accepting the
// server keys a verifier allows. A client that has the chain's genesis
// file dials with DialPinned and a Pin (LoadPin): the server must prove,
// at the TLS handshake, the key of one of the genesis nodes (or of a node
// the operator lists beside it), and SubmitWait and VerifyCommitted also
// require the block of a commit to carry the genesis checkpoint quorum of
// valid cosignatures from those nodes. Without a pin, services log
// UnpinnedWarning.
//
//	pin, err := client.LoadPin("genesis.yaml")
//	lc, err := client.DialPinned(ctx, "ledger-1:7000", key, pin)
//	defer lc.Close()
//
// # Submitting
//
// Signer signs bodies with its key and the next nonce and waits for each
// to commit (SubmitWait): a commit counts only once the tx is shown in the
// named block with an inclusion proof that verifies.
//
//	s := client.NewSigner(lc, key)
//	height, err := s.Submit(ctx, ledger.DatasetRegistered{...})
//
// A rejected tx is a *RejectedError: errors.Is(err, ErrRejected) tells a
// rejection from a ledger that cannot be reached, errors.Is(err,
// ledger.ErrBadNonce) (or any *ledger.TxError sentinel) tests its code,
// and errors.As gives the *ledger.TxError. The node sends the typed
// reason in the Submit result (TxResult.error); a service that ends a
// gRPC call because the ledger rejected its tx attaches the same message
// as a status detail (StatusError), which FromStatus turns back into a
// *RejectedError. Nothing reads a reason string.
//
// # Queries
//
// Nonce, Member, Dataset, Model, Job, Round, Rounds, UpdatesByDigest and
// Lineage read the ledger's records into the ledger package's types; a
// record the ledger does not hold is an error wrapping
// ledger.ErrRecordNotFound. RoundAt reads a round at least at a height (a
// node behind it waits for it, bounded), as a caller that knows the
// height its tx committed at does. They are the one reader of the node's
// query JSON: callers do not decode it themselves.
// Block, Blocks and Tx read the chain, checked against hashes and proofs.
//
// # Join challenges
//
// A coordinator admits a trainer to a job's task stream by a challenge
// (NewChallenge) that the trainer signs with its ledger key
// (SignChallenge, over ChallengeDomain ‖ challenge) and the coordinator
// checks (VerifyChallenge) before looking the key up as a trainer member.
package client
