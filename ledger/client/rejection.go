package client

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
)

// ErrRejected is wrapped by the error of a tx the ledger rejected
// (RejectedError).
var ErrRejected = errors.New("ledger node: tx rejected")

// RejectedError is the error of a tx the ledger rejected, as SubmitWait
// and Signer.Submit return it. It wraps ErrRejected and the ledger's typed
// reason, so callers test a rejection with errors.Is(err, ErrRejected),
// its code with errors.Is(err, ledger.ErrBadNonce) (any *ledger.TxError
// sentinel) and read it with errors.As(err, &te) for a *ledger.TxError;
// never by reading the message.
type RejectedError struct {
	// TxError is the ledger's typed reason; nil only when a server sent no
	// code (then errors.As finds no *ledger.TxError).
	TxError *ledger.TxError
	// Reason is the rejection as the node words it, for messages.
	Reason string
}

// Error implements error.
func (e *RejectedError) Error() string { return ErrRejected.Error() + ": " + e.Reason }

// Unwrap returns ErrRejected and the *ledger.TxError.
func (e *RejectedError) Unwrap() []error {
	if e.TxError == nil {
		return []error{ErrRejected}
	}
	return []error{ErrRejected, e.TxError}
}

// Rejection returns the typed error of a rejected Submit result (a
// *RejectedError), or nil for any other status. It reads the result's
// TxError message, or, from a node that sends only the code, the code.
func Rejection(r *ledgerv1.TxResult) error {
	if r.GetStatus() != ledgerv1.TxStatus_TX_STATUS_REJECTED {
		return nil
	}
	e := &RejectedError{Reason: r.Reason}
	switch {
	case r.Error != nil:
		e.TxError = TxErrorFromProto(r.Error)
	case r.Code != "":
		e.TxError = &ledger.TxError{Code: ledger.Code(r.Code), Msg: r.Reason}
	}
	return e
}

// TxErrorProto is the wire form of a ledger rejection.
func TxErrorProto(te *ledger.TxError) *ledgerv1.TxError {
	return &ledgerv1.TxError{Code: string(te.Code), Cause: string(te.Cause), Message: te.Msg}
}

// TxErrorFromProto is the ledger rejection p carries.
func TxErrorFromProto(p *ledgerv1.TxError) *ledger.TxError {
	return &ledger.TxError{Code: ledger.Code(p.GetCode()), Cause: ledger.Cause(p.GetCause()), Msg: p.GetMessage()}
}

// StatusError returns a gRPC status error with code c and err's message that
// carries err's *ledger.TxError, if it wraps one, as a status detail (a
// ledgerv1.TxError), for a server whose call ends because the ledger
// rejected a tx. FromStatus reads it back.
func StatusError(c codes.Code, err error) error {
	st := status.New(c, err.Error())
	var te *ledger.TxError
	if errors.As(err, &te) {
		if d, derr := st.WithDetails(TxErrorProto(te)); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// FromStatus returns the error a gRPC call ended with, typed: a status
// that carries a ledgerv1.TxError detail (see StatusError) becomes a
// *RejectedError holding that *ledger.TxError, with the status message as
// its reason; any other error is returned as it is.
func FromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	for _, d := range st.Details() {
		if p, ok := d.(*ledgerv1.TxError); ok {
			return &RejectedError{TxError: TxErrorFromProto(p), Reason: st.Message()}
		}
	}
	return err
}
