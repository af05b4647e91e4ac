package coordinator

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestLaunchRefusal(t *testing.T) {
	plain := errors.New("dial tcp: connection refused")
	for _, tc := range []struct {
		name    string
		err     error
		want    string // the error's text; "" for nil
		refusal bool   // a *LaunchError
	}{
		{name: "nil", err: nil},
		{name: "not a status", err: plain, want: plain.Error()},
		{name: "licence", err: status.Error(codes.FailedPrecondition, `launch: job j: datasets.published[0]: dataset abc ("by-only") has licence "CC-BY-4.0", which the job does not accept`),
			want: `job j.yaml refused by the coordinator (FailedPrecondition): job j: datasets.published[0]: dataset abc ("by-only") has licence "CC-BY-4.0", which the job does not accept`, refusal: true},
		{name: "no prefix", err: status.Error(codes.PermissionDenied, "only an admin or a coordinator may launch"),
			want: "job j.yaml refused by the coordinator (PermissionDenied): only an admin or a coordinator may launch", refusal: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := LaunchRefusal("j.yaml", tc.err)
			if tc.want == "" {
				if got != nil {
					t.Fatalf("LaunchRefusal(nil) = %v", got)
				}
				return
			}
			if got == nil || got.Error() != tc.want {
				t.Fatalf("LaunchRefusal = %v\nwant %s", got, tc.want)
			}
			if strings.Contains(got.Error(), "rpc error") {
				t.Errorf("gRPC's wrapping kept: %v", got)
			}
			var le *LaunchError
			if errors.As(got, &le) != tc.refusal {
				t.Errorf("errors.As(*LaunchError) = %v, want %v", !tc.refusal, tc.refusal)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("the refusal does not wrap the gRPC error")
			}
			if tc.refusal && status.Code(got) != status.Code(tc.err) {
				t.Errorf("status.Code = %v, want %v", status.Code(got), status.Code(tc.err))
			}
		})
	}
}
