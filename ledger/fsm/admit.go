package fsm

import (
	"crypto/ed25519"
	"encoding/hex"
	"fmt"

	"github.com/fedtune/fedtune/ledger"
)

// NonceWindow is how far above a signer's last applied nonce Admit accepts
// a nonce. Within a window, txs of one signer may be submitted back to back
// before the earlier ones commit; a nonce beyond it can never apply soon
// and would only hold queue space.
const NonceWindow = 1 << 16

// Admit runs the checks of a transaction that need no next block, against
// the committed state: the policy's max_tx_bytes, the stateless checks of
// DecodeTx, the chain ID, a current member as signer, the signature with
// that member's key, the signer's role for the tx type, and a nonce above
// the signer's last applied nonce and at most NonceWindow above it. It
// returns the decoded tx (a *TxError when refused). A node runs it where a
// tx enters (Submit, on every node, before forwarding) and on the leader
// before a tx enters a proposal, so that a stranger's tx is never
// replicated. It changes nothing. What depends on the txs before it in
// the block (the round state machine, duplicate registrations, an
// admin's MemberAdded in the same block) is only checked when the block is
// applied; so a member's first tx must wait until its MemberAdded has
// committed.
func (f *FSM) Admit(envelope []byte) (*ledger.Tx, error) {
	if err := f.Err(); err != nil {
		return nil, err
	}
	if max := f.g.Policy.MaxTxBytes; len(envelope) > max {
		return nil, txErr(ledger.CodeTooLarge, "envelope is %d bytes, policy max_tx_bytes is %d", len(envelope), max)
	}
	tx, err := ledger.DecodeTx(envelope)
	if err != nil {
		return nil, err
	}
	if tx.ChainID != f.g.ChainID {
		return nil, txErr(ledger.CodeWrongChain, "tx is for chain %q, this chain is %q", abbrev(tx.ChainID), f.g.ChainID)
	}
	var m ledger.Member
	ok, err := getJSON(f.st, memberKey(tx.Signer), &m)
	if err != nil {
		return nil, fmt.Errorf("ledger: admit: %w", err)
	}
	if !ok {
		return nil, txErrCause(ledger.CodeUnknownSigner, ledger.CauseNotMember, "signer %s is not a member", tx.Signer)
	}
	if !m.Active {
		return nil, txErrCause(ledger.CodeUnknownSigner, ledger.CauseSignerRemoved, "signer %s was removed at height %d", tx.Signer, m.RemovedHeight)
	}
	pub, err := hex.DecodeString(m.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("ledger: admit: member %s has a bad stored key", m.ID)
	}
	if err := tx.VerifyWith(ed25519.PublicKey(pub)); err != nil {
		return nil, err
	}
	typ := tx.Body.TxType()
	if !ledger.MaySign(typ, m.Role) {
		return nil, txErr(ledger.CodeForbidden, "%s needs role %s; signer %s is %s", typ, ledger.SignerRoles(typ), tx.Signer, m.Role)
	}
	last, err := f.Nonce(tx.Signer)
	if err != nil {
		return nil, err
	}
	if tx.Nonce <= last {
		return nil, txErrCause(ledger.CodeBadNonce, ledger.CauseNonceStale, "nonce %d is not above the last nonce %d of signer %s; use %d", tx.Nonce, last, tx.Signer, last+1)
	}
	if tx.Nonce-last > NonceWindow {
		return nil, txErrCause(ledger.CodeBadNonce, ledger.CauseNonceAhead, "nonce %d is more than %d above the last nonce %d of signer %s", tx.Nonce, NonceWindow, last, tx.Signer)
	}
	tx.MarkVerified(m.PublicKey)
	return tx, nil
}
