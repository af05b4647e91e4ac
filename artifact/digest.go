package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// DigestPrefix is the optional algorithm prefix ParseDigest accepts
// ("sha256:abcd…", the OCI form).
const DigestPrefix = "sha256:"

// DigestLen is the length of a digest string: 64 lowercase hex characters.
const DigestLen = 2 * sha256.Size

// ErrBadDigest is wrapped by every function given a string that is not a
// digest.
var ErrBadDigest = errors.New("artifact: bad digest")

// ParseDigest checks that s names a blob and returns it in canonical form:
// 64 lowercase hex characters, the SHA-256 of the blob. A leading "sha256:"
// is accepted and dropped. Anything else, upper-case hex included, is an
// error wrapping ErrBadDigest that says what is wrong.
func ParseDigest(s string) (string, error) {
	d := strings.TrimPrefix(s, DigestPrefix)
	if len(d) != DigestLen {
		return "", fmt.Errorf("%w %q: %d characters, want %d lowercase hex (a SHA-256)", ErrBadDigest, abbrev(s), len(d), DigestLen)
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			return "", fmt.Errorf("%w %q: upper-case hex at position %d; digests are lowercase", ErrBadDigest, abbrev(s), i)
		default:
			return "", fmt.Errorf("%w %q: character %q at position %d is not hex", ErrBadDigest, abbrev(s), c, i)
		}
	}
	return d, nil
}

// DigestOf returns the digest of b.
func DigestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func abbrev(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
