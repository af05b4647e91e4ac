package tlsid

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/internal/dsse"
)

func key(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, dsse.KeyID(k.Public().(ed25519.PublicKey))
}

func TestCertificate(t *testing.T) {
	k, id := key(t)
	c, err := Certificate(k)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if leaf.Subject.CommonName != id {
		t.Errorf("CN = %q, want %s", leaf.Subject.CommonName, id)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "fedtune:id:"+id {
		t.Errorf("URI SANs = %v", leaf.URIs)
	}
	if leaf.SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("signature algorithm %v", leaf.SignatureAlgorithm)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if got, err := IDFromCert(leaf); err != nil || got != id {
		t.Errorf("IDFromCert = %q, %v", got, err)
	}
	p, err := CertificatePEM(k)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("CertificatePEM: %q", p)
	}
	if _, err := Certificate(ed25519.PrivateKey(make([]byte, 5))); err == nil {
		t.Error("Certificate accepted a 5-byte key")
	}
}

// TestIDFromCertNeverTrustsNames: the ID comes from the key; a certificate
// whose CN or URI SAN claims another member's ID is refused.
func TestIDFromCertNeverTrustsNames(t *testing.T) {
	k, _ := key(t)
	_, victim := key(t)
	good, _ := Certificate(k)
	tests := []struct {
		name string
		edit func(c *x509.Certificate)
	}{
		{"CN claims another ID", func(c *x509.Certificate) { c.Subject.CommonName = victim }},
		{"URI SAN claims another ID", func(c *x509.Certificate) {
			u, _ := url.Parse(URIPrefix + victim)
			c.URIs = []*url.URL{u}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := *good.Leaf
			tc.edit(&c)
			if _, err := IDFromCert(&c); !errors.Is(err, ErrBadCert) || !strings.Contains(err.Error(), "does not match") {
				t.Fatalf("IDFromCert: %v; want ErrBadCert", err)
			}
		})
	}
	c := *good.Leaf
	c.PublicKey = &struct{}{}
	if _, err := IDFromCert(&c); !errors.Is(err, ErrBadCert) || !strings.Contains(err.Error(), "want ed25519") {
		t.Fatalf("non-ed25519 key: %v", err)
	}
}

func TestVerifiers(t *testing.T) {
	if ExpectID("a")("a") != nil || ExpectID("a")("b") == nil {
		t.Error("ExpectID")
	}
	v := AllowIDs("a", "b")
	if v("a") != nil || v("b") != nil || v("c") == nil {
		t.Error("AllowIDs")
	}
	if AllowAny()("x") != nil {
		t.Error("AllowAny")
	}
}

// TestHandshake runs real TLS over loopback TCP and checks what each side
// learns and refuses.
func TestHandshake(t *testing.T) {
	sk, sid := key(t)
	ck, cid := key(t)
	_, other := key(t)
	tests := []struct {
		name             string
		allowClient      Verifier
		expectServer     string
		wantErrSubstring string
	}{
		{"both allowed", ExpectID(cid), sid, ""},
		{"client refused", ExpectID(other), sid, "bad certificate"},
		{"server refused", ExpectID(cid), other, "expected " + other},
		{"nil verifier refuses", nil, sid, "bad certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			scfg, err := ServerConfig(sk, tc.allowClient)
			if err != nil {
				t.Fatal(err)
			}
			ccfg, err := ClientConfig(ck, ExpectID(tc.expectServer))
			if err != nil {
				t.Fatal(err)
			}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
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
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					srvErr <- err
					return
				}
				id, err := IDFromCert(tc.ConnectionState().PeerCertificates[0])
				if err == nil && id != cid {
					err = errors.New("server saw client " + id)
				}
				tc.Write([]byte("ok"))
				srvErr <- err
			}()
			conn, err := tls.Dial("tcp", ln.Addr().String(), ccfg)
			if err == nil {
				if conn.ConnectionState().Version != tls.VersionTLS13 {
					t.Errorf("version %x, want TLS 1.3", conn.ConnectionState().Version)
				}
				buf := make([]byte, 2)
				// A server that never answers fails the test instead of hanging it.
				if err = conn.SetDeadline(time.Now().Add(10 * time.Second)); err == nil {
					_, err = conn.Read(buf) // the server's verdict on our certificate arrives here
				}
				conn.Close()
			}
			serr := <-srvErr
			if tc.wantErrSubstring == "" {
				if err != nil || serr != nil {
					t.Fatalf("client %v, server %v", err, serr)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) {
				t.Fatalf("client error %v; want one mentioning %q (server: %v)", err, tc.wantErrSubstring, serr)
			}
			if tc.name == "client refused" && !errors.Is(serr, ErrNotAllowed) {
				t.Errorf("server error %v; want ErrNotAllowed", serr)
			}
		})
	}
}

// TestGRPCPeerID: a handler learns the caller's key ID; plain text gives none.
func TestGRPCPeerID(t *testing.T) {
	sk, sid := key(t)
	ck, cid := key(t)
	for _, secure := range []bool{true, false} {
		sopt, dopt := InsecureServerOption(), InsecureDialOption()
		if secure {
			var err error
			if sopt, err = ServerOption(sk, AllowIDs(cid)); err != nil {
				t.Fatal(err)
			}
			if dopt, err = DialOption(ck, ExpectID(sid)); err != nil {
				t.Fatal(err)
			}
		}
		seen := make(chan string, 1)
		gs := grpc.NewServer(sopt, grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			id, err := PeerID(ctx)
			if err != nil {
				if !errors.Is(err, ErrNoPeer) {
					return nil, status.Error(codes.Internal, "PeerID error does not wrap ErrNoPeer")
				}
				id = "none"
			}
			seen <- id
			return h(ctx, req)
		}))
		healthpb.RegisterHealthServer(gs, health.NewServer())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go gs.Serve(ln)
		cc, err := grpc.NewClient(ln.Addr().String(), dopt)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
		want := "none"
		if secure {
			want = cid
		}
		if got := <-seen; got != want {
			t.Errorf("secure=%v: PeerID = %q, want %q", secure, got, want)
		}
		cc.Close()
		gs.Stop()
	}
	if _, err := PeerID(context.Background()); !errors.Is(err, ErrNoPeer) {
		t.Errorf("PeerID outside a call: %v", err)
	}
}
