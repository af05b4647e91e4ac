package cli

import (
	"errors"
	"fmt"
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
