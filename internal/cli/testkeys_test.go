package cli

import (
	"crypto/ed25519"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// testKey runs "fedtune keygen" for name in dir and returns the key file,
// the key ID and the public key in hex (as a genesis file lists it).
func testKey(t *testing.T, dir, name string) (keyFile, id, pubHex string) {
	t.Helper()
	keyFile = filepath.Join(dir, name+".key")
	id = strings.SplitN(mustRun(t, "keygen", "-o", keyFile), "\n", 2)[0]
	pub, err := ledger.LoadPublicKey(filepath.Join(dir, name+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	return keyFile, id, hex.EncodeToString(pub)
}

// testTLSKey returns a fresh key for a test's TLS connections.
func testTLSKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
