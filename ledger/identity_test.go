package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/digest"
)

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "member.key")
	if err := SaveKey(path, k); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----") {
		t.Fatalf("not PKCS#8 PEM: %q", data[:30])
	}
	back, err := LoadKey(path)
	if err != nil || !back.Equal(k) {
		t.Fatalf("LoadKey: %v", err)
	}
	pub := k.Public().(ed25519.PublicKey)
	if got, err := LoadPublicKey(path); err != nil || !got.Equal(pub) {
		t.Fatalf("LoadPublicKey(private file): %v", err)
	}
	pubPath := filepath.Join(dir, "member.pub")
	if err := SavePublicKey(pubPath, pub); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadPublicKey(pubPath); err != nil || !got.Equal(pub) {
		t.Fatalf("LoadPublicKey(pub file): %v", err)
	}
	// No temp files left behind.
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("dir holds %d files", len(ents))
	}
	// A key readable by others is refused, with the fix in the message.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadKey(0644): %v", err)
	}
	// A public key file is not a private key.
	os.Chmod(pubPath, 0o600)
	if _, err := LoadKey(pubPath); !errors.Is(err, ErrBadKey) {
		t.Fatalf("LoadKey(pub): %v", err)
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

func TestKeyID(t *testing.T) {
	a := newActor("x", RoleAdmin)
	pub := a.key.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	if a.id != hex.EncodeToString(sum[:]) || !digest.Valid(a.id) {
		t.Fatal("ID is not hex SHA-256 of the raw key")
	}
}

func TestParsePublicKey(t *testing.T) {
	a := newActor("x", RoleAdmin)
	pub := a.key.Public().(ed25519.PublicKey)
	pemText, _ := EncodePublicKeyPEM(pub)
	privPEM, _ := EncodePrivateKeyPEM(a.key)
	for _, ok := range []string{a.pubHex(), string(pemText), "  " + string(pemText) + "\n"} {
		if got, err := ParsePublicKey(ok); err != nil || !got.Equal(pub) {
			t.Errorf("ParsePublicKey(%q): %v", abbrev(ok), err)
		}
	}
	for _, bad := range []string{"", "zz", a.pubHex()[:62], a.pubHex() + "00", string(privPEM), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
		string(pemText) + "trailing"} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParsePublicKey(%q) = %v, want ErrBadKey", abbrev(bad), err)
		}
	}
}

func TestRoleInference(t *testing.T) {
	if !RoleInference.Valid() || Role("Inference").Valid() {
		t.Fatal("Valid")
	}
	if _, ok := TxRoles[string(RoleInference)]; ok {
		t.Fatal("inference is a tx type?")
	}
	for typ, r := range TxRoles {
		if r == RoleInference {
			t.Fatalf("role inference signs %s", typ)
		}
	}
}
