package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// fedtune verifier refuses a missing or bad flag before it dials anything.
func TestVerifierFlags(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "v.key")
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.SaveKey(key, k); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no ledger", []string{"--key", key, "--work-dir", dir}, "--ledger is required"},
		{"no key", []string{"--ledger", "127.0.0.1:1", "--work-dir", dir}, "--key is required"},
		{"no work dir", []string{"--ledger", "127.0.0.1:1", "--key", key}, "--work-dir is required"},
		{"missing key file", []string{"--ledger", "127.0.0.1:1", "--key", filepath.Join(dir, "none.key"), "--work-dir", dir}, "verifier: --key"},
		{"no artifact store", []string{"--ledger", "127.0.0.1:1", "--key", key, "--work-dir", dir}, "--artifacts ADDR is required"},
		{"bad artifact server id", []string{"--ledger", "127.0.0.1:1", "--key", key, "--work-dir", dir, "--artifacts", "127.0.0.1:2", "--artifacts-id", "x"}, "--artifacts-id \"x\" is not a key ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, append([]string{"verifier"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
