package artifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	artifactv1 "github.com/fedtune/fedtune/api/artifact/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
)

// A caller whom AuthorizeDownload refuses learns nothing from Upload or
// Status about a stored blob: each answers as for an absent one. One who
// holds the bytes still uploads them (and the store keeps its one copy);
// a caller who may read the blob is told it is there.
func TestServiceUploadStatusRevealNothing(t *testing.T) {
	ctx := context.Background()
	alice, bob := newIdent(t), newIdent(t)
	ls := startLimitServer(t, ServerConfig{AuthorizeDownload: func(ctx context.Context, digest string) error {
		if id, err := tlsid.PeerID(ctx); err != nil || id != alice.id {
			return errors.New("only alice reads here")
		}
		return nil
	}})
	data := randBytes(53, 3*ChunkSize+11)
	stored, _, err := ls.store.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	absent := DigestOf(randBytes(59, 100))
	api := ls.raw(t, bob)

	// start sends a header and returns the first answer as text, so
	// answers for the stored and the absent digest can be compared.
	start := func(d string, size int64) (artifactv1.Artifacts_UploadClient, string) {
		t.Helper()
		sctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		up, err := api.Upload(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := up.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Digest: d, Size: size}}}); err != nil {
			t.Fatal(err)
		}
		r, err := up.Recv()
		if err != nil {
			return up, status.Code(err).String()
		}
		if rd := r.GetReady(); rd != nil {
			return up, fmt.Sprintf("ready at %d", rd.Offset)
		}
		return up, "done " + r.String()
	}
	for _, size := range []int64{int64(len(data)), 7} {
		up, got := start(stored, size)
		up.CloseSend()
		up2, want := start(absent, size)
		up2.CloseSend()
		if got != want || got != "ready at 0" {
			t.Fatalf("bob's upload header for the stored blob (size %d) got %q; for an absent one %q; want both ready at 0", size, got, want)
		}
	}
	// Garbage for the stored blob ends as for an absent one.
	for _, d := range []string{stored, absent} {
		up, _ := start(d, int64(len(data)))
		for b := bytes.Repeat([]byte{0xee}, len(data)); len(b) > 0; b = b[min(len(b), ChunkSize):] {
			if err := up.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Chunk{Chunk: b[:min(len(b), ChunkSize)]}}); err != nil {
				t.Fatal(err)
			}
		}
		up.CloseSend()
		if _, err := up.Recv(); status.Code(err) != codes.DataLoss {
			t.Fatalf("bob's garbage for %s: %v; want DataLoss (digest mismatch)", d[:8], err)
		}
	}
	for _, d := range []string{stored, absent} {
		st, err := dial(t, ls.addr, bob, ls.id.id).Status(ctx, d)
		if err != nil || st.Complete || st.Received != 0 {
			t.Fatalf("bob's status of %s: %+v, %v; want not complete, nothing received", d[:8], st, err)
		}
	}
	// Bob holds the bytes: his upload goes through as for a new blob.
	res, err := dial(t, ls.addr, bob, ls.id.id).Upload(ctx, stored, bytes.NewReader(data), int64(len(data)))
	if err != nil || res.Existed || res.Sent != int64(len(data)) {
		t.Fatalf("bob's upload of the bytes he holds: %+v, %v; want them all sent, not told they existed", res, err)
	}
	if got := ls.store.dirFiles(t); bytes.Count([]byte(got), []byte(stored)) != 2 { // the blob and bob's owner record
		t.Fatalf("store after bob's upload:\n%s", got)
	}
	// Alice may read it: she is told.
	a := dial(t, ls.addr, alice, ls.id.id)
	if res, err := a.Upload(ctx, stored, bytes.NewReader(data), int64(len(data))); err != nil || !res.Existed || res.Sent != 0 {
		t.Fatalf("alice's upload: %+v, %v; want existed, nothing sent", res, err)
	}
	if st, err := a.Status(ctx, stored); err != nil || !st.Complete || st.Received != int64(len(data)) {
		t.Fatalf("alice's status: %+v, %v; want complete", st, err)
	}
}
