package artifact

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type ident struct {
	key ed25519.PrivateKey
	id  string
}

func newIdent(t testing.TB) ident {
	t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return ident{k, ledger.KeyID(k.Public().(ed25519.PublicKey))}
}

type testServer struct {
	addr    string
	id      ident
	store   *Store
	metrics *Metrics
}

// startServer serves a fresh store on a loopback TCP port: TLS allowing
// allow, or plain text when allow is nil.
func startServer(t testing.TB, allow tlsid.Verifier) *testServer {
	t.Helper()
	ts := &testServer{id: newIdent(t)}
	var err error
	ts.store, err = OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts.metrics, err = NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Store: ts.store, Metrics: ts.metrics})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	opt := tlsid.InsecureServerOption()
	if allow != nil {
		if opt, err = tlsid.ServerOption(ts.id.key, allow); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, opt) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ts.store.Close()
	})
	return ts
}

// dial connects over TLS as me expecting server ID serverID, or in plain
// text when me.key is nil.
func dial(t testing.TB, addr string, me ident, serverID string) *Client {
	t.Helper()
	opt := tlsid.InsecureDialOption()
	if me.key != nil {
		var err error
		if opt, err = tlsid.DialOption(me.key, tlsid.ExpectID(serverID)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Dial(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	c.Retries = 2
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServiceRoundTripTLS(t *testing.T) {
	ctx := context.Background()
	alice := newIdent(t)
	ts := startServer(t, tlsid.AllowIDs(alice.id))
	c := dial(t, ts.addr, alice, ts.id.id)
	data := randBytes(11, 5<<20+12345)
	d := DigestOf(data)

	if ok, err := c.Has(ctx, d); ok || err != nil {
		t.Fatalf("Has before upload = %v, %v", ok, err)
	}
	var calls int
	c.Progress = func(done, total int64) { calls++ }
	res, err := c.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Existed || res.ResumedFrom != 0 || res.Sent != int64(len(data)) {
		t.Fatalf("Upload = %+v", res)
	}
	if want := len(data)/ChunkSize + 1; calls < want {
		t.Fatalf("progress called %d times, want at least %d (one per chunk)", calls, want)
	}
	c.Progress = nil
	if info, err := c.Stat(ctx, d); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	if err := ts.store.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if n, err := c.Download(ctx, d, &buf); err != nil || n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("Download: n=%d err=%v equal=%v", n, err, bytes.Equal(buf.Bytes(), data))
	}
	local := openStore(t, t.TempDir())
	if info, err := c.Fetch(ctx, d, local); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("Fetch = %+v, %v", info, err)
	}
	if err := local.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	// A second upload finds the blob there and sends nothing.
	res, err = c.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
	if err != nil || !res.Existed || res.Sent != 0 {
		t.Fatalf("second Upload = %+v, %v", res, err)
	}
	if got := counterValue(ts.metrics.BytesIn); got != float64(len(data)) {
		t.Errorf("bytes in = %v, want %d", got, len(data))
	}
	if got := counterValue(ts.metrics.BytesOut); got != 2*float64(len(data)) {
		t.Errorf("bytes out = %v, want %d", got, 2*len(data))
	}
	if got := counterValue(ts.metrics.Uploads.WithLabelValues("stored")); got != 1 {
		t.Errorf("uploads stored = %v", got)
	}
	if got := counterValue(ts.metrics.Uploads.WithLabelValues("existed")); got != 1 {
		t.Errorf("uploads existed = %v", got)
	}
	if _, err := c.Stat(ctx, DigestOf([]byte("absent"))); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of an absent blob: %v", err)
	}
	if _, err := c.Download(ctx, DigestOf([]byte("absent")), io.Discard); !errors.Is(err, ErrNotFound) {
		t.Errorf("Download of an absent blob: %v", err)
	}
	if _, err := c.Stat(ctx, "nope"); !errors.Is(err, ErrBadDigest) {
		t.Errorf("Stat(nope): %v", err)
	}
}

// cutReader serves data but, on reaching cut, waits until the server holds
// every byte before it, then calls stop and fails: an upload interrupted
// mid-way with the server's progress known exactly.
type cutReader struct {
	data []byte
	pos  int
	cut  int
	wait func() error
	stop func()
}

func (r *cutReader) Read(p []byte) (int, error) {
	if r.pos == r.cut {
		if err := r.wait(); err != nil {
			return 0, err
		}
		r.stop()
		return 0, errors.New("connection lost (simulated)")
	}
	n := copy(p, r.data[r.pos:min(len(r.data), r.cut)])
	r.pos += n
	return n, nil
}

func TestServiceUploadResumes(t *testing.T) {
	alice := newIdent(t)
	ts := startServer(t, tlsid.AllowIDs(alice.id))
	c := dial(t, ts.addr, alice, ts.id.id)
	data := randBytes(12, 3<<20+777)
	d := DigestOf(data)
	cut := 2 << 20

	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	r := &cutReader{data: data, cut: cut, stop: cancel1, wait: func() error {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			st, err := c.Status(context.Background(), d)
			if err != nil {
				return err
			}
			if st.Received == int64(cut) {
				return nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		return errors.New("server never reached the cut")
	}}
	if _, err := c.Upload(ctx1, d, r, int64(len(data))); err == nil {
		t.Fatal("interrupted upload succeeded")
	}
	st, err := c.Status(context.Background(), d)
	if err != nil || st.Complete || st.Received != int64(cut) {
		t.Fatalf("Status after interruption = %+v, %v; want %d bytes held", st, err, cut)
	}
	res, err := c.Upload(context.Background(), d, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedFrom != int64(cut) || res.Sent != int64(len(data)-cut) {
		t.Fatalf("resumed upload = %+v; want from %d sending %d", res, cut, len(data)-cut)
	}
	if got := counterValue(ts.metrics.BytesIn); got != float64(len(data)) {
		t.Fatalf("server received %v bytes in all, want exactly %d (nothing sent twice)", got, len(data))
	}
	if err := ts.store.Verify(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(context.Background(), d); !st.Complete || st.Received != int64(len(data)) {
		t.Fatalf("Status after = %+v", st)
	}
}

func TestServiceUploadResumesWithoutSeeker(t *testing.T) {
	// A reader that cannot seek still resumes an upload the server holds
	// part of, by skipping the bytes the server has.
	ts := startServer(t, nil)
	c := dial(t, ts.addr, ident{}, "")
	data := randBytes(13, 1<<20+3)
	d := DigestOf(data)
	p, err := ts.store.ResumePartialAs(context.Background(), InsecureOwner, d)
	if err != nil {
		t.Fatal(err)
	}
	p.Write(data[:300000])
	p.Close()
	res, err := c.Upload(context.Background(), d, io.MultiReader(bytes.NewReader(data)), int64(len(data)))
	if err != nil || res.ResumedFrom != 300000 || res.Sent != int64(len(data)-300000) {
		t.Fatalf("Upload = %+v, %v", res, err)
	}
	if err := ts.store.Verify(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}

func TestServiceDownloadResumes(t *testing.T) {
	ctx := context.Background()
	alice := newIdent(t)
	ts := startServer(t, tlsid.AllowIDs(alice.id))
	c := dial(t, ts.addr, alice, ts.id.id)
	data := randBytes(14, 2<<20+5)
	d, _, err := ts.store.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1, ChunkSize, 1234567, int64(len(data))} {
		var buf bytes.Buffer
		n, size, err := c.DownloadFrom(ctx, d, off, &buf)
		if err != nil || size != int64(len(data)) || n != int64(len(data))-off || !bytes.Equal(buf.Bytes(), data[off:]) {
			t.Fatalf("DownloadFrom(%d): n=%d size=%d err=%v", off, n, size, err)
		}
	}
	if _, _, err := c.DownloadFrom(ctx, d, int64(len(data))+1, io.Discard); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("DownloadFrom past the end: %v", err)
	}

	// A fetch interrupted earlier continues from the local partial bytes.
	local := openStore(t, t.TempDir())
	p, err := local.ResumePartial(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	const have = 1500000
	p.Write(data[:have])
	p.Close()
	before := counterValue(ts.metrics.BytesOut)
	if _, err := c.Fetch(ctx, d, local); err != nil {
		t.Fatal(err)
	}
	if sent := counterValue(ts.metrics.BytesOut) - before; sent != float64(len(data)-have) {
		t.Fatalf("resumed fetch moved %v bytes, want %d", sent, len(data)-have)
	}
	if err := local.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}

	// A local partial that is wrong is caught by the digest, dropped, and
	// the fetch starts again from zero.
	local2 := openStore(t, t.TempDir())
	p, _ = local2.ResumePartial(ctx, d)
	p.Write(bytes.Repeat([]byte{0xee}, have))
	p.Close()
	before = counterValue(ts.metrics.BytesOut)
	if _, err := c.Fetch(ctx, d, local2); err != nil {
		t.Fatalf("Fetch over corrupt partial bytes: %v; want a restart from zero", err)
	}
	if sent := counterValue(ts.metrics.BytesOut) - before; sent != float64(len(data)-have+len(data)) {
		t.Fatalf("fetch over a corrupt partial moved %v bytes in all, want the %d missing, then the whole %d", sent, len(data)-have, len(data))
	}
	if err := local2.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	if n, _ := local2.PartialSize(d); n != 0 {
		t.Fatalf("corrupt partial kept (%d bytes)", n)
	}
}

func TestServiceRejectsCorruptUpload(t *testing.T) {
	ctx := context.Background()
	alice := newIdent(t)
	ts := startServer(t, tlsid.AllowIDs(alice.id))
	c := dial(t, ts.addr, alice, ts.id.id)
	data := randBytes(15, 1<<20+1)
	claimed := DigestOf(append([]byte("tampered"), data...))
	_, err := c.Upload(ctx, claimed, bytes.NewReader(data), int64(len(data)))
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("upload under a wrong digest: %v; want ErrDigestMismatch", err)
	}
	if !strings.Contains(err.Error(), DigestOf(data)) {
		t.Errorf("error does not name the digest the bytes have: %v", err)
	}
	for _, dg := range []string{claimed, DigestOf(data)} {
		if ok, _ := ts.store.Has(dg); ok {
			t.Errorf("server kept %s", dg)
		}
		if st, _ := c.Status(ctx, dg); st.Received != 0 {
			t.Errorf("server kept %d partial bytes of %s", st.Received, dg)
		}
	}
	// The client sent the blob once more from zero after the first
	// mismatch, which the server refused the same way.
	if got := counterValue(ts.metrics.Rejected.WithLabelValues("digest_mismatch")); got != 2 {
		t.Errorf("rejected{digest_mismatch} = %v, want 2 (the upload and its restart from zero)", got)
	}
	// More bytes than announced are refused too.
	if _, err := c.Upload(ctx, DigestOf(data), bytes.NewReader(data), 10); err == nil {
		t.Error("upload of more bytes than announced succeeded")
	}
	if _, err := c.Upload(ctx, DigestOf(data), bytes.NewReader(data[:10]), int64(len(data))); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("upload from a short reader: %v; want ErrSizeMismatch", err)
	}
}

func TestServiceAuthentication(t *testing.T) {
	ctx := context.Background()
	alice, mallory := newIdent(t), newIdent(t)
	tlsSrv := startServer(t, tlsid.AllowIDs(alice.id))
	plainSrv := startServer(t, nil)
	d := DigestOf(nil)

	tests := []struct {
		name    string
		addr    string
		me      ident
		expect  string
		wantMsg string
	}{
		// TLS 1.3 clients finish the handshake before the server judges
		// their certificate, so the client sees the server's alert ("bad
		// certificate") or a closed connection, never a served call.
		{"client not allowed", tlsSrv.addr, mallory, tlsSrv.id.id, "allows the other's key ID"},
		{"wrong server ID", tlsSrv.addr, alice, mallory.id, "expected " + mallory.id},
		{"plain-text client, TLS server", tlsSrv.addr, ident{}, "", ""},
		{"TLS client, plain-text server", plainSrv.addr, alice, plainSrv.id.id, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, tc.addr, tc.me, tc.expect)
			c.Retries = 0
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := c.Stat(ctx, d)
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Stat: %v; want ErrUnavailable mentioning %q", err, tc.wantMsg)
			}
			t.Logf("error: %v", err)
		})
	}
	// The allowed client with the right server ID gets through.
	if _, err := dial(t, tlsSrv.addr, alice, tlsSrv.id.id).Has(ctx, d); err != nil {
		t.Fatal(err)
	}
}

func TestNewMetricsTwiceOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering the metrics twice did not fail")
	}
}

// counterValue reads a counter's value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(fmt.Sprint("read counter: ", err))
	}
	return m.GetCounter().GetValue()
}

func TestServiceMaxBlobSize(t *testing.T) {
	store := openStore(t, t.TempDir())
	m, _ := NewMetrics(nil)
	srv, err := NewServer(ServerConfig{Store: store, Metrics: m, MaxBlobSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, tlsid.InsecureServerOption()) }()
	defer func() { cancel(); <-done }()
	c := dial(t, ln.Addr().String(), ident{}, "")
	data := randBytes(30, 1001)
	_, err = c.Upload(context.Background(), DigestOf(data), bytes.NewReader(data), int64(len(data)))
	if err == nil || !strings.Contains(err.Error(), "maximum blob size of 1000 bytes") || !errors.Is(err, ErrResourceExhausted) {
		t.Fatalf("upload over the limit: %v", err)
	}
	if got := counterValue(m.Rejected.WithLabelValues("too_large")); got != 1 {
		t.Fatalf("rejected{too_large} = %v", got)
	}
	if _, err := NewServer(ServerConfig{}); err == nil {
		t.Fatal("NewServer without a store succeeded")
	}
}
