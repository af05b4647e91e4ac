package tlsid

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"

	"github.com/fedtune/fedtune/internal/dsse"
)

// URIPrefix starts the URI SAN that names a node's key ID in its
// certificate: "fedtune:id:<keyid>".
const URIPrefix = "fedtune:id:"

// certLifetime is how long a generated certificate is valid. Certificates
// are cheap and made afresh each time a node starts; the identity is the
// key, not the certificate.
const certLifetime = 365 * 24 * time.Hour

// Errors (wrapped; test with errors.Is).
var (
	// ErrNotAllowed: the peer's key ID was refused by the Verifier.
	ErrNotAllowed = errors.New("tlsid: peer not allowed")
	// ErrBadCert: the peer's certificate is not a fedtune identity certificate.
	ErrBadCert = errors.New("tlsid: bad peer certificate")
	// ErrNoPeer: the context carries no TLS peer (plain text, or not a gRPC call).
	ErrNoPeer = errors.New("tlsid: no authenticated peer")
)

// Verifier decides whether the peer with key ID id may connect. It returns
// nil to accept, or an error saying why not.
type Verifier func(id string) error

// ExpectID accepts exactly the peer whose key ID is id.
func ExpectID(id string) Verifier {
	return func(got string) error {
		if got != id {
			return fmt.Errorf("peer key ID is %s, expected %s", got, id)
		}
		return nil
	}
}

// AllowIDs accepts the peers whose key IDs are listed.
func AllowIDs(ids ...string) Verifier {
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return func(got string) error {
		if !set[got] {
			return fmt.Errorf("key ID %s is not in the allowed list (%d IDs)", got, len(set))
		}
		return nil
	}
}

// AllowAny accepts every peer that proves it holds some ed25519 key. The
// connection is still encrypted and PeerID still names the caller; use it
// where a handler checks the caller itself.
func AllowAny() Verifier { return func(string) error { return nil } }

// Certificate makes a self-signed TLS certificate for key: ed25519, the key
// ID as subject common name and as URI SAN "fedtune:id:<keyid>".
func Certificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	if len(key) != ed25519.PrivateKeySize {
		return tls.Certificate{}, fmt.Errorf("tlsid: private key is %d bytes, want an ed25519 key (%d)", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	id := dsse.KeyID(pub)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlsid: serial: %w", err)
	}
	uri, _ := url.Parse(URIPrefix + id)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id, Organization: []string{"fedtune"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlsid: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlsid: parse own certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// CertificatePEM returns Certificate(key) as a PEM "CERTIFICATE" block, for
// writing to disk.
func CertificatePEM(key ed25519.PrivateKey) ([]byte, error) {
	c, err := Certificate(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), nil
}

// IDFromCert returns the key ID of the ed25519 public key in cert. The ID
// comes from the key; a certificate whose name fields claim another ID is
// refused, so that logs and the name cannot disagree.
func IDFromCert(cert *x509.Certificate) (string, error) {
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return "", fmt.Errorf("%w: public key is %T, want ed25519 (a fedtune ledger key)", ErrBadCert, cert.PublicKey)
	}
	id := dsse.KeyID(pub)
	if cn := cert.Subject.CommonName; cn != "" && cn != id {
		return "", fmt.Errorf("%w: subject CN %q does not match the key's ID %s", ErrBadCert, cn, id)
	}
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, URIPrefix) && s != URIPrefix+id {
			return "", fmt.Errorf("%w: URI SAN %q does not match the key's ID %s", ErrBadCert, s, id)
		}
	}
	return id, nil
}

// verifyConn checks the peer's certificate chain by key ID.
func verifyConn(role string, allow Verifier) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: the %s presented no certificate", ErrBadCert, role)
		}
		id, err := IDFromCert(cs.PeerCertificates[0])
		if err != nil {
			return fmt.Errorf("%s certificate: %w", role, err)
		}
		if allow == nil {
			return fmt.Errorf("%w: %s %s (no verifier configured)", ErrNotAllowed, role, id)
		}
		if err := allow(id); err != nil {
			return fmt.Errorf("%w: %s %s: %v", ErrNotAllowed, role, id, err)
		}
		return nil
	}
}

func baseConfig(key ed25519.PrivateKey) (*tls.Config, error) {
	cert, err := Certificate(key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		// Peers are authenticated by key ID in VerifyConnection, not by a CA.
		InsecureSkipVerify: true, //nolint:gosec // see VerifyConnection
	}, nil
}

// ServerConfig returns a TLS 1.3 server config presenting key's certificate
// and requiring a client certificate whose key ID allow accepts.
func ServerConfig(key ed25519.PrivateKey, allow Verifier) (*tls.Config, error) {
	c, err := baseConfig(key)
	if err != nil {
		return nil, err
	}
	c.InsecureSkipVerify = false
	c.ClientAuth = tls.RequireAnyClientCert
	c.VerifyConnection = verifyConn("client", allow)
	return c, nil
}

// ClientConfig returns a TLS 1.3 client config presenting key's certificate
// and accepting a server whose key ID allow accepts (ExpectID(id) for a
// known server).
func ClientConfig(key ed25519.PrivateKey, allow Verifier) (*tls.Config, error) {
	c, err := baseConfig(key)
	if err != nil {
		return nil, err
	}
	c.VerifyConnection = verifyConn("server", allow)
	return c, nil
}

// ServerOption returns the grpc.ServerOption that serves TLS with
// ServerConfig(key, allow).
func ServerOption(key ed25519.PrivateKey, allow Verifier) (grpc.ServerOption, error) {
	c, err := ServerConfig(key, allow)
	if err != nil {
		return nil, err
	}
	return grpc.Creds(credentials.NewTLS(c)), nil
}

// DialOption returns the grpc.DialOption that dials with
// ClientConfig(key, allow).
func DialOption(key ed25519.PrivateKey, allow Verifier) (grpc.DialOption, error) {
	c, err := ClientConfig(key, allow)
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(c)), nil
}

// InsecureServerOption serves plain-text gRPC: no encryption, no peer
// identity. Use it only behind an explicit --insecure flag.
func InsecureServerOption() grpc.ServerOption {
	return grpc.Creds(insecure.NewCredentials())
}

// InsecureDialOption dials plain-text gRPC: no encryption, no peer
// identity. Use it only behind an explicit --insecure flag.
func InsecureDialOption() grpc.DialOption {
	return grpc.WithTransportCredentials(insecure.NewCredentials())
}

// PeerID returns the key ID of the peer of a gRPC call served over tlsid
// TLS. On a plain-text connection it returns an error wrapping ErrNoPeer.
func PeerID(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", fmt.Errorf("%w: no gRPC peer in context", ErrNoPeer)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", fmt.Errorf("%w: connection from %v is not TLS", ErrNoPeer, p.Addr)
	}
	if len(ti.State.PeerCertificates) == 0 {
		return "", fmt.Errorf("%w: %v presented no certificate", ErrNoPeer, p.Addr)
	}
	return IDFromCert(ti.State.PeerCertificates[0])
}
