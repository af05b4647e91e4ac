package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/dsse"
)

// Role is what a member may do on the ledger. See the package doc for the
// table of which role signs which transaction type.
type Role string

// The roles a member can hold.
const (
	RoleAdmin       Role = "admin"
	RoleCoordinator Role = "coordinator"
	RoleAggregator  Role = "aggregator"
	RoleTrainer     Role = "trainer"
	RoleAuditor     Role = "auditor"
	// RoleInference serves a committed model and signs receipts for its
	// answers (package inference/receipt); it signs no transaction.
	RoleInference Role = "inference"
	// RoleVerifier is defined with the spot checks (spotcheck.go).
)

// Roles lists every valid role, in a fixed order.
var Roles = []Role{RoleAdmin, RoleCoordinator, RoleAggregator, RoleTrainer, RoleAuditor, RoleInference, RoleVerifier}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	for _, v := range Roles {
		if r == v {
			return true
		}
	}
	return false
}

// ErrBadKey is wrapped by the key loaders when a file or string does not hold
// an ed25519 key of the expected form.
var ErrBadKey = errors.New("ledger: bad key")

// GenerateKey returns a new ed25519 private key from crypto/rand.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return k, nil
}

// KeyID returns a member's ID: the lowercase hex SHA-256 of the raw 32-byte
// public key.
func KeyID(pub ed25519.PublicKey) string { return dsse.KeyID(pub) }

// EncodePrivateKeyPEM returns k as a PKCS#8 "PRIVATE KEY" PEM block.
func EncodePrivateKeyPEM(k ed25519.PrivateKey) ([]byte, error) {
	if len(k) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key is %d bytes, want %d", ErrBadKey, len(k), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal PKCS#8: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodePublicKeyPEM returns pub as a PKIX "PUBLIC KEY" PEM block.
func EncodePublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadKey, len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal PKIX: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// SaveKey writes k to path as a PKCS#8 PEM file with mode 0600. It writes a
// temporary file in the same directory, syncs it and renames it into place,
// so a crash never leaves a half-written key. An existing file is replaced.
func SaveKey(path string, k ed25519.PrivateKey) error {
	data, err := EncodePrivateKeyPEM(k)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// SavePublicKey writes pub to path as a PKIX PEM file with mode 0644.
func SavePublicKey(path string, pub ed25519.PublicKey) error {
	data, err := EncodePublicKeyPEM(pub)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o644)
}

// LoadKey reads an ed25519 private key from a PKCS#8 PEM file. It refuses a
// file that group or others can read, since the key is a member's identity.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o; a private key file must be 0600 (chmod 600 %s)", ErrBadKey, path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	k, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	return k, nil
}

// ParsePrivateKeyPEM parses a PKCS#8 "PRIVATE KEY" PEM block holding an
// ed25519 key.
func ParsePrivateKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrBadKey)
	}
	if b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: PEM block is %q, want \"PRIVATE KEY\" (PKCS#8)", ErrBadKey, b.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, want ed25519", ErrBadKey, k)
	}
	return ek, nil
}

// LoadPublicKey reads an ed25519 public key from a PEM file: either a PKIX
// "PUBLIC KEY" block or a PKCS#8 private key file, whose public half it
// returns.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load public key: %w", err)
	}
	b, _ := pem.Decode(data)
	if b != nil && b.Type == "PRIVATE KEY" {
		k, err := ParsePrivateKeyPEM(data)
		if err != nil {
			return nil, fmt.Errorf("load public key %s: %w", path, err)
		}
		return k.Public().(ed25519.PublicKey), nil
	}
	pub, err := ParsePublicKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("load public key %s: %w", path, err)
	}
	return pub, nil
}

// ParsePublicKey parses an ed25519 public key written as a PKIX "PUBLIC KEY"
// PEM block or as 64 hex characters (the raw 32 bytes). These are the two
// forms the genesis file accepts.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "-----BEGIN") {
		b, rest := pem.Decode([]byte(t))
		if b == nil {
			return nil, fmt.Errorf("%w: malformed PEM block", ErrBadKey)
		}
		if len(strings.TrimSpace(string(rest))) != 0 {
			return nil, fmt.Errorf("%w: trailing data after the PEM block", ErrBadKey)
		}
		if b.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: PEM block is %q, want \"PUBLIC KEY\"", ErrBadKey, b.Type)
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: key is %T, want ed25519", ErrBadKey, k)
		}
		return ek, nil
	}
	raw, err := hex.DecodeString(t)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: want a PEM \"PUBLIC KEY\" block or %d hex characters, got %q", ErrBadKey, 2*ed25519.PublicKeySize, abbrev(t))
	}
	return ed25519.PublicKey(raw), nil
}

func abbrev(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}
