package artifact

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/tlsid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// AuthorizeUpload sees the caller's TLS identity; a refusal stores nothing
// and counts as "unauthorized", while downloads stay open.
func TestServiceAuthorizeUpload(t *testing.T) {
	store := openStore(t, t.TempDir())
	m, _ := NewMetrics(nil)
	server, member, stranger := newIdent(t), newIdent(t), newIdent(t)
	srv, err := NewServer(ServerConfig{Store: store, Metrics: m, AuthorizeUpload: func(ctx context.Context) error {
		id, err := tlsid.PeerID(ctx)
		if err != nil {
			return err // not a status: the server wraps it as PermissionDenied
		}
		if id != member.id {
			return status.Errorf(codes.PermissionDenied, "upload: %s may not store artifacts", id[:8])
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opt, err := tlsid.ServerOption(server.key, tlsid.AllowAny())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, opt) }()
	defer func() { cancel(); <-done }()

	data := randBytes(31, 5000)
	d := DigestOf(data)
	_, err = dial(t, ln.Addr().String(), stranger, server.id).Upload(context.Background(), d, bytes.NewReader(data), int64(len(data)))
	if err == nil || !strings.Contains(err.Error(), "PermissionDenied") || !strings.Contains(err.Error(), "may not store artifacts") {
		t.Fatalf("stranger's upload: %v, want PermissionDenied", err)
	}
	if _, err := store.Stat(d); err == nil {
		t.Fatal("a refused upload was stored")
	}
	if got := counterValue(m.Rejected.WithLabelValues("unauthorized")); got != 1 {
		t.Fatalf("rejected{unauthorized} = %v, want 1", got)
	}
	c := dial(t, ln.Addr().String(), member, server.id)
	if _, err := c.Upload(context.Background(), d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("member's upload: %v", err)
	}
	var got bytes.Buffer
	if _, err := dial(t, ln.Addr().String(), stranger, server.id).Download(context.Background(), d, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("stranger's download: %d bytes, %v", got.Len(), err)
	}
}
