package cli

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rpcWrapping matches gRPC's rendering of a status error.
var rpcWrapping = regexp.MustCompile(`rpc error: code = (\w+) desc = `)

// readableError is an error whose text has gRPC's "rpc error: code = …
// desc = …" rendering replaced by the status's message followed by its
// code; it unwraps to the error it rewrites (errors.Is, errors.As and
// status.Code see the original).
type readableError struct {
	msg string
	err error
}

func (e *readableError) Error() string { return e.msg }
func (e *readableError) Unwrap() error { return e.err }

// GRPCStatus keeps status.Code and status.Convert working on the error.
func (e *readableError) GRPCStatus() *status.Status {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(e.err, &se) {
		return se.GRPCStatus() // the status as its server sent it
	}
	return status.Convert(e.err)
}

// readable rewrites gRPC's wrapping in err's text, so that a command's
// error says what the server said and its code once: "round status: the
// ledger holds no rounds of job x (NotFound)", not "round status: rpc
// error: code = NotFound desc = the ledger holds no rounds of job x".
// Errors without that wrapping come back as they are.
func readable(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if !strings.Contains(msg, "rpc error: code = ") {
		return err
	}
	refused := status.Code(err) == codes.Unavailable && strings.Contains(msg, "connect: connection refused")
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if st := se.GRPCStatus(); st != nil {
			wrapped := fmt.Sprintf("rpc error: code = %s desc = %s", st.Code(), st.Message())
			msg = strings.Replace(msg, wrapped, fmt.Sprintf("%s (%s)", st.Message(), st.Code()), 1)
		}
	}
	// What is left (a status rendered into another error's text, or in a
	// message relayed from another server): the code, then the message.
	msg = rpcWrapping.ReplaceAllString(msg, "$1: ")
	if refused {
		msg += "; nothing listens at that address: is the server running, and is the address (--addr, --ledger, --coordinator, --artifacts) right?"
	}
	return &readableError{msg: msg, err: err}
}
