package coordinator

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LaunchError is a job the coordinator refused to launch, as a client of
// its LaunchJob RPC reports it: the coordinator's reason as it wrote it
// (for a licence refusal: the dataset, its licence and the licences the
// job accepts), with the gRPC code named once instead of gRPC's
// "rpc error: code = … desc = …" wrapping.
type LaunchError struct {
	File   string     // the job file sent
	Code   codes.Code // the coordinator's status code
	Reason string     // the coordinator's message, without its "launch: " prefix
	Err    error      // the gRPC error
}

// Error names the job file, the code and the coordinator's reason.
func (e *LaunchError) Error() string {
	return fmt.Sprintf("job %s refused by the coordinator (%s): %s", e.File, e.Code, e.Reason)
}

// Unwrap returns the gRPC error, so that status.Code sees its code.
func (e *LaunchError) Unwrap() error { return e.Err }

// LaunchRefusal turns an error of LaunchJob for the job file file into a
// *LaunchError when it is the coordinator's status, and returns err as it
// is otherwise (nil included). `fedtune round launch` and `fedtune devnet
// up` both report refusals through it.
func LaunchRefusal(file string, err error) error {
	st, ok := status.FromError(err)
	if err == nil || !ok || st.Code() == codes.OK {
		return err
	}
	return &LaunchError{File: file, Code: st.Code(), Reason: strings.TrimPrefix(st.Message(), "launch: "), Err: err}
}
