package artifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	artifactv1 "github.com/fedtune/fedtune/api/artifact/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
)

// limitServer serves cfg (Store filled in) over TLS admitting any key.
type limitServer struct {
	addr  string
	id    ident
	store *Store
	m     *Metrics
}

func startLimitServer(t *testing.T, cfg ServerConfig) *limitServer {
	t.Helper()
	ls := &limitServer{id: newIdent(t), store: openStore(t, t.TempDir())}
	ls.m, _ = NewMetrics(nil)
	cfg.Store, cfg.Metrics = ls.store, ls.m
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls.addr = ln.Addr().String()
	opt, err := tlsid.ServerOption(ls.id.key, tlsid.AllowAny())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, opt) }()
	t.Cleanup(func() { cancel(); <-done })
	return ls
}

// raw opens a plain gRPC connection as me, for streams the Client would
// not make.
func (ls *limitServer) raw(t *testing.T, me ident) artifactv1.ArtifactsClient {
	t.Helper()
	opt, err := tlsid.DialOption(me.key, tlsid.ExpectID(ls.id.id))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(ls.addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return artifactv1.NewArtifactsClient(conn)
}

// holdUpload starts an upload of d (size bytes), sends data and leaves the
// stream open.
func holdUpload(t *testing.T, ctx context.Context, api artifactv1.ArtifactsClient, d string, size int64, data []byte) artifactv1.Artifacts_UploadClient {
	t.Helper()
	up, err := api.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Digest: d, Size: size}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := up.Recv(); err != nil || r.GetReady() == nil {
		t.Fatalf("upload start: %v, %v", r, err)
	}
	if len(data) > 0 {
		if err := up.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Chunk{Chunk: data}}); err != nil {
			t.Fatal(err)
		}
	}
	return up
}

// One uploader's partial bytes of a digest are its own: another uploader
// of the same digest starts from zero and succeeds, and each sees only its
// own progress in Status.
func TestServicePartialsPerUploader(t *testing.T) {
	ctx := context.Background()
	ls := startLimitServer(t, ServerConfig{})
	alice, bob := newIdent(t), newIdent(t)
	data := randBytes(40, 3*ChunkSize+5)
	d := DigestOf(data)
	hctx, cancel := context.WithCancel(ctx)
	holdUpload(t, hctx, ls.raw(t, alice), d, int64(len(data)), bytes.Repeat([]byte{0xee}, ChunkSize))
	ca, cb := dial(t, ls.addr, alice, ls.id.id), dial(t, ls.addr, bob, ls.id.id)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if st, _ := ca.Status(ctx, d); st.Received == ChunkSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("alice's partial bytes never showed in her Status")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if st, err := cb.Status(ctx, d); err != nil || st.Received != 0 {
		t.Fatalf("bob's Status = %+v, %v; want 0 received (alice's bytes are hers)", st, err)
	}
	res, err := cb.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
	if err != nil || res.ResumedFrom != 0 {
		t.Fatalf("bob's upload = %+v, %v; want a clean upload from 0", res, err)
	}
	if err := ls.store.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	if stored, _, err := ls.store.Usage(bob.id); err != nil || stored != int64(len(data)) {
		t.Fatalf("bob's usage = %d, %v; want %d stored", stored, err, len(data))
	}
}

// A digest mismatch at the end of an upload (here: bytes the server held
// from an earlier upload were wrong) makes the client send the whole blob
// once more from zero.
func TestServiceUploadRestartsAfterMismatch(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, nil)
	data := randBytes(41, 2*ChunkSize+9)
	d := DigestOf(data)
	p, err := ts.store.ResumePartialAs(ctx, InsecureOwner, d)
	if err != nil {
		t.Fatal(err)
	}
	p.Write(bytes.Repeat([]byte{0xee}, ChunkSize))
	p.Close()
	c := dial(t, ts.addr, ident{}, "")
	res, err := c.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("upload over a bad partial: %v; want a restart from zero", err)
	}
	if res.ResumedFrom != 0 || res.Sent != int64(len(data)-ChunkSize+len(data)) {
		t.Fatalf("upload = %+v; want the rest, then the whole blob from 0", res)
	}
	if err := ts.store.Verify(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(ts.metrics.Rejected.WithLabelValues("digest_mismatch")); got != 1 {
		t.Fatalf("rejected{digest_mismatch} = %v, want 1", got)
	}
}

func TestServiceLimits(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		cfg    ServerConfig
		first  int // bytes alice stores first (0: none)
		hold   int // bytes of an upload alice holds open (0: none)
		size   int // the upload tested
		reason string
		want   string
	}{
		{"max blob size", ServerConfig{MaxBlobSize: 1000}, 0, 0, 1001, "too_large", "maximum blob size of 1000 bytes"},
		{"quota of stored bytes", ServerConfig{MemberQuota: 1000}, 600, 0, 500, "quota", "over its quota of 1000 bytes"},
		{"quota counts uploads under way", ServerConfig{MemberQuota: 1000}, 0, 700, 400, "quota", "700 announced by uploads under way"},
		{"bytes in flight", ServerConfig{MemberInFlight: 1000}, 0, 800, 300, "quota_in_flight", "over its limit of 1000 bytes in flight"},
		{"within every limit", ServerConfig{MaxBlobSize: 1000, MemberQuota: 1000, MemberInFlight: 1000}, 100, 200, 400, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := startLimitServer(t, tc.cfg)
			alice, bob := newIdent(t), newIdent(t)
			ca := dial(t, ls.addr, alice, ls.id.id)
			if tc.first > 0 {
				data := randBytes(42, tc.first)
				if _, err := ca.Upload(ctx, DigestOf(data), bytes.NewReader(data), int64(len(data))); err != nil {
					t.Fatal(err)
				}
			}
			if tc.hold > 0 {
				data := randBytes(43, tc.hold)
				hctx, cancel := context.WithCancel(ctx)
				defer cancel()
				holdUpload(t, hctx, ls.raw(t, alice), DigestOf(data), int64(len(data)), data[:tc.hold/2])
				time.Sleep(100 * time.Millisecond) // let the server write them
			}
			before := ls.store.dirFiles(t)
			data := randBytes(44, tc.size)
			_, err := ca.Upload(ctx, DigestOf(data), bytes.NewReader(data), int64(len(data)))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrResourceExhausted) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("upload: %v; want ResourceExhausted: %s", err, tc.want)
			}
			if got := counterValue(ls.m.Rejected.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("rejected{%s} = %v, want 1", tc.reason, got)
			}
			if after := ls.store.dirFiles(t); after != before {
				t.Errorf("a refused upload changed the store:\n%s\n->\n%s", before, after)
			}
			// The limits are per member: bob may still upload it.
			if _, err := dial(t, ls.addr, bob, ls.id.id).Upload(ctx, DigestOf(data), bytes.NewReader(data), int64(len(data))); err != nil && tc.reason != "too_large" {
				t.Errorf("bob's upload of the same blob: %v", err)
			}
		})
	}
}

// dirFiles lists the store's files (path and size) as one string.
func (s *Store) dirFiles(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(s.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() && fi.Name() != "LOCK" {
			rel, _ := filepath.Rel(s.dir, p)
			fmt.Fprintf(&b, "%s %d\n", rel, fi.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Streams on which nothing moves for the idle timeout are closed: an
// upload that sends nothing, and a download whose reader takes nothing.
func TestServiceIdleTimeouts(t *testing.T) {
	ctx := context.Background()
	const idle = 300 * time.Millisecond
	ls := startLimitServer(t, ServerConfig{IdleTimeout: idle})
	alice := newIdent(t)
	api := ls.raw(t, alice)

	data := randBytes(45, 2*ChunkSize)
	d := DigestOf(data)
	start := time.Now()
	up := holdUpload(t, ctx, api, d, int64(len(data)), data[:ChunkSize])
	_, err := up.Recv()
	if el := time.Since(start); status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "idle timeout") || el < idle || el > idle+5*time.Second {
		t.Fatalf("held upload ended after %v with %v; want DeadlineExceeded after the idle timeout", el, err)
	}
	// Its bytes are kept for a resume.
	c := dial(t, ls.addr, alice, ls.id.id)
	res, err := c.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
	if err != nil || res.ResumedFrom != ChunkSize {
		t.Fatalf("resume after the idle close = %+v, %v", res, err)
	}

	// A download large enough to fill the flow-control windows, read
	// once and then left.
	big := randBytes(46, 48<<20)
	bd, _, err := ls.store.Put(ctx, bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	down, err := api.Download(ctx, &artifactv1.DownloadRequest{Digest: bd})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := down.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(idle + time.Second)
	var got int64
	for {
		m, err := down.Recv()
		if err == io.EOF {
			t.Fatalf("a stalled download ran to its end (%d bytes)", got)
		}
		if err != nil {
			if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "idle timeout") {
				t.Fatalf("stalled download: %v; want DeadlineExceeded naming the idle timeout", err)
			}
			break
		}
		got += int64(len(m.Chunk))
	}
	if n := counterValue(ls.m.Rejected.WithLabelValues("idle")); n != 2 {
		t.Fatalf("rejected{idle} = %v, want 2", n)
	}
}

// AuthorizeDownload sees the caller and the digest; a refusal sends no
// byte.
func TestServiceAuthorizeDownload(t *testing.T) {
	ctx := context.Background()
	alice, bob := newIdent(t), newIdent(t)
	ls := startLimitServer(t, ServerConfig{AuthorizeDownload: func(ctx context.Context, digest string) error {
		id, err := tlsid.PeerID(ctx)
		if err != nil || id != alice.id {
			return errors.New("only alice reads here")
		}
		return nil
	}})
	data := randBytes(47, 1000)
	d, _, err := ls.store.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := dial(t, ls.addr, bob, ls.id.id).Download(ctx, d, &buf); !errors.Is(err, ErrPermissionDenied) || !strings.Contains(err.Error(), "only alice reads here") || buf.Len() != 0 {
		t.Fatalf("bob's download: %v (%d bytes); want PermissionDenied and nothing", err, buf.Len())
	}
	if _, err := dial(t, ls.addr, bob, ls.id.id).Stat(ctx, d); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("bob's stat: %v; want PermissionDenied", err)
	}
	if got := counterValue(ls.m.Rejected.WithLabelValues("download_denied")); got != 2 {
		t.Fatalf("rejected{download_denied} = %v, want 2 (download and stat)", got)
	}
	if _, err := dial(t, ls.addr, alice, ls.id.id).Download(ctx, d, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("alice's download: %v", err)
	}
}

// Abandoned partial uploads of every owner are pruned by age; open ones
// and fresh ones stay; opening the store drops partials of complete blobs.
func TestStorePruneOwners(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openStore(t, dir)
	old, fresh, done := randBytes(48, 100), randBytes(49, 100), randBytes(50, 100)
	for _, tc := range []struct {
		owner string
		data  []byte
	}{{"", old}, {"alice", old}, {"bob", fresh}, {"carol", done}} {
		p, err := s.ResumePartialAs(ctx, tc.owner, DigestOf(tc.data))
		if err != nil {
			t.Fatal(err)
		}
		p.Write(tc.data[:50])
		p.Close()
	}
	past := time.Now().Add(-time.Hour)
	for _, o := range []string{"", "alice"} {
		if err := os.Chtimes(s.partialPath(o, DigestOf(old)), past, past); err != nil {
			t.Fatal(err)
		}
	}
	if _, partial, _ := s.Usage("alice"); partial != 50 {
		t.Fatalf("alice's partial bytes = %d, want 50", partial)
	}
	if _, err := s.ResumePartialAs(ctx, "Alice/..", DigestOf(old)); err == nil {
		t.Fatal("an owner name with a path in it was accepted")
	}
	n, err := s.PruneUploads(time.Minute)
	if err != nil || n != 2 {
		t.Fatalf("PruneUploads = %d, %v; want the 2 old partials", n, err)
	}
	if sz, _ := s.PartialSizeAs("bob", DigestOf(fresh)); sz != 50 {
		t.Fatalf("bob's fresh partial = %d bytes, want kept", sz)
	}
	if _, _, err := s.Put(ctx, bytes.NewReader(done)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	if sz, _ := s.PartialSizeAs("carol", DigestOf(done)); sz != 0 {
		t.Fatalf("carol's partial of a complete blob kept (%d bytes) after reopening", sz)
	}
	if sz, _ := s.PartialSizeAs("bob", DigestOf(fresh)); sz != 50 {
		t.Fatal("reopening dropped bob's resumable partial")
	}
}
