package ledger

import (
	"errors"
	"fmt"
)

// Code classifies why a transaction was rejected. Codes are stable strings:
// clients and the gRPC service may switch on them.
type Code string

// The rejection codes.
const (
	CodeMalformed      Code = "malformed"       // envelope or payload does not decode or is not canonical
	CodeBadSignature   Code = "bad_signature"   // signature does not verify with the signer's key
	CodeWrongChain     Code = "wrong_chain"     // payload names another chain ID
	CodeUnknownSigner  Code = "unknown_signer"  // signer is not a current member
	CodeForbidden      Code = "forbidden"       // signer's role may not send this type
	CodeBadNonce       Code = "bad_nonce"       // nonce not greater than the signer's last
	CodeDuplicate      Code = "duplicate"       // the same tx is already on the chain or earlier in the block
	CodeInvalid        Code = "invalid"         // a body field is missing or out of range
	CodeNotFound       Code = "not_found"       // the body names a member, model, dataset, round or update that does not exist
	CodeAlreadyExists  Code = "already_exists"  // the body registers something that already exists
	CodeRoundNotOpen   Code = "round_not_open"  // the round was committed or failed
	CodeNotSelected    Code = "not_selected"    // the trainer is not selected for the round
	CodeDeadlinePassed Code = "deadline_passed" // the block time is past the round deadline
	CodeTooLarge       Code = "too_large"       // tx or block exceeds the genesis policy
)

// Cause refines a Code where a caller must tell apart refusals that share
// it; most refusals have none (""). Causes are stable strings.
type Cause string

// The causes.
const (
	// CauseNotMember (with CodeUnknownSigner): the signer key was never
	// added. A node whose state lags the chain may not know yet a member
	// the leader already added.
	CauseNotMember Cause = "not_member"
	// CauseSignerRemoved (with CodeUnknownSigner): the signer was removed.
	CauseSignerRemoved Cause = "signer_removed"
	// CauseNonceStale (with CodeBadNonce): the nonce is not above the
	// signer's last.
	CauseNonceStale Cause = "nonce_stale"
	// CauseNonceAhead (with CodeBadNonce): the nonce is more than
	// NonceWindow above the signer's last. A node whose state lags may not
	// have applied the signer's earlier txs yet.
	CauseNonceAhead Cause = "nonce_ahead"
)

// TxError is why the ledger rejected a transaction. Rejected transactions
// change no state. errors.Is(err, &TxError{Code: c}) matches any TxError with
// code c, and the Err* sentinels below are such values.
type TxError struct {
	Code Code
	Msg  string
	// Cause refines Code for the refusals that share one (see Cause).
	Cause Cause
}

// MayBeLag reports whether the refusal may only mean that the refusing
// node's state lags the chain's (CauseNotMember, CauseNonceAhead): the
// leader, further ahead, might accept the tx. Everything else Admit
// refuses for would be refused by the leader too (a removed member or a
// replaced key can only make a lagging node accept what the leader then
// refuses).
func (e *TxError) MayBeLag() bool {
	return e.Code == CodeUnknownSigner && e.Cause == CauseNotMember ||
		e.Code == CodeBadNonce && e.Cause == CauseNonceAhead
}

// Error implements error.
func (e *TxError) Error() string { return fmt.Sprintf("ledger: tx rejected (%s): %s", e.Code, e.Msg) }

// Is reports whether target is a *TxError with the same code.
func (e *TxError) Is(target error) bool {
	var t *TxError
	if errors.As(target, &t) {
		return t.Code == e.Code
	}
	return false
}

// Sentinels for errors.Is on a rejection's code.
var (
	ErrMalformed      = &TxError{Code: CodeMalformed, Msg: "malformed transaction"}
	ErrBadSignature   = &TxError{Code: CodeBadSignature, Msg: "bad signature"}
	ErrWrongChain     = &TxError{Code: CodeWrongChain, Msg: "wrong chain"}
	ErrUnknownSigner  = &TxError{Code: CodeUnknownSigner, Msg: "unknown signer"}
	ErrForbidden      = &TxError{Code: CodeForbidden, Msg: "forbidden"}
	ErrBadNonce       = &TxError{Code: CodeBadNonce, Msg: "bad nonce"}
	ErrDuplicate      = &TxError{Code: CodeDuplicate, Msg: "duplicate"}
	ErrInvalid        = &TxError{Code: CodeInvalid, Msg: "invalid"}
	ErrNotFound       = &TxError{Code: CodeNotFound, Msg: "not found"}
	ErrAlreadyExists  = &TxError{Code: CodeAlreadyExists, Msg: "already exists"}
	ErrRoundNotOpen   = &TxError{Code: CodeRoundNotOpen, Msg: "round not open"}
	ErrNotSelected    = &TxError{Code: CodeNotSelected, Msg: "not selected"}
	ErrDeadlinePassed = &TxError{Code: CodeDeadlinePassed, Msg: "deadline passed"}
	ErrTooLarge       = &TxError{Code: CodeTooLarge, Msg: "too large"}
)

func txErr(code Code, format string, args ...any) *TxError {
	return &TxError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// ErrRecordNotFound is returned by the FSM's queries when the block, tx,
// member, model, dataset or round asked for does not exist.
var ErrRecordNotFound = errors.New("ledger: not found")

// VerifyError is what VerifyChain returns when a chain does not re-derive:
// the first height at which it broke, the header field or part that differs
// (for example "prev_hash", "tx_root", "state_hash", "time", "tx[3]",
// "encoding", "tx_index", "head"), and what was found.
type VerifyError struct {
	Height uint64
	Field  string
	Msg    string
}

// Error implements error.
func (e *VerifyError) Error() string {
	return fmt.Sprintf("ledger: chain broken at height %d: %s: %s", e.Height, e.Field, e.Msg)
}
