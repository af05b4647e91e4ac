package tlsid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// ecdsaCert is a self-signed certificate of a P-256 key: a valid TLS
// identity, but no fedtune ledger key.
func ecdsaCert(t *testing.T) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// TestServerRefuses: what a ledger node's TLS listener (raft or gRPC)
// refuses, seen from both ends: plain text, TLS 1.2, no client
// certificate, a certificate of a non-ed25519 key, a key the verifier
// refuses.
func TestServerRefuses(t *testing.T) {
	sk, _ := key(t)
	ck, _ := key(t)
	base := func() *tls.Config {
		c, err := ClientConfig(ck, AllowAny())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name      string
		client    func() *tls.Config // nil: plain TCP
		allow     Verifier
		serverErr error // wrapped by the server's handshake error, when set
		serverMsg string
		clientMsg string
	}{
		{"plain TCP", nil, AllowAny(), nil, "first record does not look like a TLS handshake", ""},
		{"TLS 1.2", func() *tls.Config { c := base(); c.MaxVersion = tls.VersionTLS12; c.MinVersion = 0; return c }, AllowAny(), nil, "unsupported versions", "protocol version"},
		{"no client certificate", func() *tls.Config { c := base(); c.Certificates = nil; return c }, AllowAny(), nil, "client didn't provide a certificate", "certificate required"},
		{"ECDSA client certificate", func() *tls.Config { c := base(); c.Certificates = []tls.Certificate{ecdsaCert(t)}; return c }, AllowAny(), ErrBadCert, "want ed25519", "bad certificate"},
		{"refused key", base, func(string) error { return errors.New("not a ledger node") }, ErrNotAllowed, "not a ledger node", "bad certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scfg, err := ServerConfig(sk, tc.allow)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			srvErr := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					srvErr <- err
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				srvErr <- tls.Server(c, scfg).Handshake()
			}()
			var cerr error
			if tc.client == nil {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				_, _ = c.Write([]byte("\x00\x85\xa4Term plain raft bytes"))
				_, _ = io.ReadAll(c)
				c.Close()
			} else {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), tc.client())
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					_, err = io.ReadAll(c)
					if err == nil {
						err = io.EOF
					}
					c.Close()
				}
				cerr = err
			}
			serr := <-srvErr
			if serr == nil || !strings.Contains(serr.Error(), tc.serverMsg) || (tc.serverErr != nil && !errors.Is(serr, tc.serverErr)) {
				t.Fatalf("server: %v, want %q (%v)", serr, tc.serverMsg, tc.serverErr)
			}
			if tc.clientMsg != "" && (cerr == nil || !strings.Contains(cerr.Error(), tc.clientMsg)) {
				t.Fatalf("client: %v, want %q", cerr, tc.clientMsg)
			}
		})
	}
}
