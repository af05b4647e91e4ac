package artifact

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fedtune/fedtune/internal/digest"
)

// DigestPrefix is the optional algorithm prefix ParseDigest accepts
// ("sha256:abcd…", the OCI form).
const DigestPrefix = "sha256:"

// DigestLen is the length of a digest string: 64 lowercase hex characters.
const DigestLen = digest.Len

// ErrBadDigest is wrapped by every function given a string that is not a
// digest.
var ErrBadDigest = errors.New("artifact: bad digest")

// ParseDigest checks that s names a blob and returns it in canonical form:
// 64 lowercase hex characters, the SHA-256 of the blob (internal/digest).
// A leading "sha256:" is accepted and dropped. Anything else, upper-case
// hex included, is an error wrapping ErrBadDigest that says what is wrong.
func ParseDigest(s string) (string, error) {
	d := strings.TrimPrefix(s, DigestPrefix)
	if p := digest.Problem(d); p != "" {
		return "", fmt.Errorf("%w %q: %s", ErrBadDigest, abbrev(s), p)
	}
	return d, nil
}

// DigestOf returns the digest of b (digest.Bytes).
func DigestOf(b []byte) string { return digest.Bytes(b) }

func abbrev(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
