package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestReadable(t *testing.T) {
	notFound := status.Error(codes.NotFound, "status: the ledger holds no rounds of job x")
	plain := errors.New("open job.yaml: no such file or directory")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"no status", plain, plain.Error()},
		{"wrapped status", fmt.Errorf("round status: %w", notFound), "round status: status: the ledger holds no rounds of job x (NotFound)"},
		{"status as text", fmt.Errorf("trainer: %v", notFound), "trainer: NotFound: status: the ledger holds no rounds of job x"},
		{"relayed", fmt.Errorf("submit: %w", status.Error(codes.Unavailable, "forward: rpc error: code = Unavailable desc = no leader")),
			"submit: forward: Unavailable: no leader (Unavailable)"},
		{"nothing listens", fmt.Errorf("ledger blocks: %w", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7101: connect: connection refused"`)),
			`ledger blocks: connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7101: connect: connection refused" (Unavailable); nothing listens at that address: is the server running, and is the address (--addr, --ledger, --coordinator, --artifacts) right?`},
		{"named and wrapped", &readableError{msg: "ledger blocks: status: " + notFound.Error(), err: fmt.Errorf("status: %w", notFound)},
			"ledger blocks: status: status: the ledger holds no rounds of job x (NotFound)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := readable(tc.err)
			if tc.want == "" {
				if got != nil {
					t.Fatalf("readable(nil) = %v", got)
				}
				return
			}
			if got.Error() != tc.want {
				t.Fatalf("readable:\n got %s\nwant %s", got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Error("the readable error does not wrap the original")
			}
			if status.Code(got) != status.Code(tc.err) {
				t.Errorf("status.Code = %v, want %v", status.Code(got), status.Code(tc.err))
			}
		})
	}
}

// TestErrorsNameTheCommand: a command's error starts with the command,
// once.
func TestErrorsNameTheCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ledger", "blocks", "--bogus"}, "ledger blocks: unknown flag: --bogus"},
		{[]string{"audit", "verify"}, "audit verify: give exactly one of --ledger ADDR or --export FILE"},
		{[]string{"dataset", "ls", "--from-chain", "--export", "x.fedtune"}, "dataset ls: give --from-chain"},
		{[]string{"ledger", "query", "round", "job-1"}, "ledger query round job-1: --round N is required"},
	} {
		var out, errb bytes.Buffer
		err := RunWith(context.Background(), tc.args, &out, &errb)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v: %v, want it to start with %q", tc.args, err, tc.want)
		}
	}
}
