// Package digest owns fedtune's one spelling of a content digest: the SHA-256
// of some bytes as 64 lowercase hex characters. Member IDs, model, dataset
// and update digests, and artifact names all use it.
//
// Use Valid or Check (Problem says what is wrong) on any digest that came
// from outside; use Bytes, Reader and File to compute one. The package
// imports nothing of fedtune's.
package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// Len is the length of a digest in hex characters.
const Len = 2 * sha256.Size

// Valid reports whether s is exactly 64 lowercase hex characters.
func Valid(s string) bool { return Problem(s) == "" }

// Problem says what keeps s from being a digest ("" when it is one): its
// length, an upper-case hex digit, or a character that is not hex, with
// its position.
func Problem(s string) string {
	if len(s) != Len {
		return fmt.Sprintf("%d characters, want %d lowercase hex (a SHA-256)", len(s), Len)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			return fmt.Sprintf("upper-case hex at position %d; digests are lowercase", i)
		default:
			return fmt.Sprintf("character %q at position %d is not hex", c, i)
		}
	}
	return ""
}

// Check returns nil when s is a valid digest and otherwise an error that
// names the field (what), shows the offending value, shortened, and says
// what is wrong with it (Problem).
func Check(what, s string) error {
	p := Problem(s)
	if p == "" {
		return nil
	}
	shown := s
	if len(shown) > 80 {
		shown = shown[:80] + "…"
	}
	return fmt.Errorf("%s: %q is not a digest: %s", what, shown, p)
}

// Bytes returns the digest of b.
func Bytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Reader returns the digest of everything r yields.
func Reader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// File returns the digest of the file at path.
func File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	d, err := Reader(f)
	if err != nil {
		return "", fmt.Errorf("digest %s: %w", path, err)
	}
	return d, nil
}
