package fsm

import (
	"fmt"

	"github.com/fedtune/fedtune/ledger"
)

// txErr is a rejection with code.
func txErr(code ledger.Code, format string, args ...any) *ledger.TxError {
	return &ledger.TxError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// txErrCause is txErr with a Cause.
func txErrCause(code ledger.Code, cause ledger.Cause, format string, args ...any) *ledger.TxError {
	return &ledger.TxError{Code: code, Cause: cause, Msg: fmt.Sprintf(format, args...)}
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// abbrev shortens s for messages.
func abbrev(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
