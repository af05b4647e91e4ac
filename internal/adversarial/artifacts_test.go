package adversarial

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	artifactv1 "github.com/fedtune/fedtune/api/artifact/v1"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// The coordinator's artifact limits in these attacks: blobs up to 8 MiB,
// 4 MiB stored per member, a 3 s idle timeout, partial uploads pruned after
// 4 s.
const (
	artifactsMaxBlob = 8 << 20
	artifactsQuota   = 4 << 20
	artifactsIdle    = 3 * time.Second
	artifactsPrune   = 4 * time.Second
)

// artifactsNet starts a devnet of two trainers with the limits above, runs
// its one-round job to the end and returns it with trainer-1's update.
func artifactsNet(t *testing.T, ctx context.Context) (*devnet.Network, string) {
	t.Helper()
	n := prepareNet(t, ctx, devnet.Options{JobName: "artifacts", Trainers: 2, Rounds: 1, LocalSteps: 3, MinTrainers: 2})
	f, err := os.OpenFile(filepath.Join(n.Dir, "coordinator.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "artifacts:\n  max_blob_size: %d\n  member_quota: %d\n  member_in_flight: %d\n  idle_timeout: %s\n  prune_after: %s\n",
		artifactsMaxBlob, artifactsQuota, artifactsMaxBlob, artifactsIdle, artifactsPrune)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 1 {
		t.Fatalf("the devnet job ended %s with %d rounds: %s", st.State, len(st.Rounds), st.Detail)
	}
	for _, u := range st.Rounds[0].Updates {
		if u.Trainer == n.ID("trainer-1") {
			return nw, u.UpdateDigest
		}
	}
	t.Fatalf("no update of trainer-1 in %+v", st.Rounds[0])
	return nil, ""
}

// artifactsDial connects to the coordinator's artifact service with key.
func artifactsDial(t *testing.T, n *devnet.Net, key ed25519.PrivateKey) (*artifact.Client, *grpc.ClientConn) {
	t.Helper()
	opt, err := tlsid.DialOption(key, tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.Coordinator, opt, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<20), grpc.MaxCallSendMsgSize(1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := artifact.NewClient(conn)
	c.Retries = 0
	return c, conn
}

// artifactsBlob returns size random bytes and their digest.
func artifactsBlob(t *testing.T, size int) ([]byte, string) {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, artifact.DigestOf(b)
}

// artifactsHold starts an upload of digest (size bytes) as conn's key,
// sends the first n bytes of data (garbage, if the caller likes) and
// returns the stream, still open; cancel ends it.
func artifactsHold(t *testing.T, ctx context.Context, conn *grpc.ClientConn, digest string, size int64, data []byte) artifactv1.Artifacts_UploadClient {
	t.Helper()
	up, err := artifactv1.NewArtifactsClient(conn).Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Digest: digest, Size: size}}}); err != nil {
		t.Fatal(err)
	}
	r, err := up.Recv()
	if err != nil || r.GetReady() == nil || r.GetReady().Offset != 0 {
		t.Fatalf("upload start: %v, %v; want ready at 0", r, err)
	}
	for len(data) > 0 {
		k := min(len(data), artifact.ChunkSize)
		if err := up.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Chunk{Chunk: data[:k]}}); err != nil {
			t.Fatal(err)
		}
		data = data[k:]
	}
	return up
}

// TestAttackArtifacts tries, on a devnet whose job has run, what strangers
// and members could do to the coordinator's artifact store: read an update
// that is not theirs, announce huge blobs, poison or hold another member's
// upload, overfill the store, point a job's eval data anywhere on the
// coordinator's disk, and flood Join. Each fails with its reason, and
// neither the chain nor the store changes (beyond the honest uploads).
func TestAttackArtifacts(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx := testContext(t, 4*time.Minute)
	nw, update := artifactsNet(t, ctx)
	n := nw.Net

	t.Run("DownloadUpdateBeforeItsSubmission", func(t *testing.T) {
		// An update is uploaded before its UpdateSubmitted is on the chain:
		// in between, only its uploader (and auditors, admins) may fetch it.
		chain := waitSettled(t, ctx, n)
		data, d := artifactsBlob(t, 4096)
		c1, _ := artifactsDial(t, n, n.Keys["trainer-1"])
		if _, err := c1.Upload(ctx, d, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("trainer-1 uploading: %v", err)
		}
		for _, who := range []string{"trainer-2", "aggregator"} {
			c, _ := artifactsDial(t, n, n.Keys[who])
			var buf bytes.Buffer
			_, err := c.Download(ctx, d, &buf)
			if !errors.Is(err, artifact.ErrPermissionDenied) || !strings.Contains(err.Error(), "the ledger does not record it yet") || buf.Len() != 0 {
				t.Errorf("%s downloading trainer-1's not yet submitted upload: %v (%d bytes); want PermissionDenied: the ledger does not record it yet", who, err, buf.Len())
			}
		}
		for _, who := range []string{"trainer-1", "admin"} {
			c, _ := artifactsDial(t, n, n.Keys[who])
			if _, err := c.Download(ctx, d, io.Discard); err != nil {
				t.Errorf("%s downloading trainer-1's upload: %v", who, err)
			}
		}
		requireUnchanged(t, ctx, n, chain)
	})
	t.Run("DownloadOthersUpdate", func(t *testing.T) {
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		stranger, err := ledger.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			who  string
			key  ed25519.PrivateKey
			want string
		}{
			{"a non-member TLS key", stranger, "is not a ledger member"},
			{"trainer-2", n.Keys["trainer-2"], "only that trainer, the aggregators job artifacts designates, the verifiers its verify rule names, auditors and admins may download it"},
		} {
			c, _ := artifactsDial(t, n, tc.key)
			var buf bytes.Buffer
			_, err := c.Download(ctx, update, &buf)
			if !errors.Is(err, artifact.ErrPermissionDenied) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s downloading trainer-1's update: %v; want PermissionDenied: %s", tc.who, err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("%s received %d bytes of trainer-1's update", tc.who, buf.Len())
			}
		}
		// Those who need it still get it.
		for _, who := range []string{"trainer-1", "aggregator", "admin"} {
			c, _ := artifactsDial(t, n, n.Keys[who])
			if _, err := c.Download(ctx, update, io.Discard); err != nil {
				t.Errorf("%s downloading trainer-1's update: %v", who, err)
			}
		}
		requireUnchanged(t, ctx, n, chain)
		requireStore(t, n, store, 0)
	})

	t.Run("AnnounceHugeUpload", func(t *testing.T) {
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		c, _ := artifactsDial(t, n, n.Keys["trainer-1"])
		start := time.Now()
		_, err := c.Upload(ctx, artifact.DigestOf([]byte("a terabyte")), io.LimitReader(rand.Reader, 1e12), 1e12)
		if !errors.Is(err, artifact.ErrResourceExhausted) || !strings.Contains(err.Error(), fmt.Sprintf("maximum blob size of %d bytes", artifactsMaxBlob)) {
			t.Fatalf("announcing 10^12 bytes: %v; want ResourceExhausted naming the maximum blob size", err)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("the refusal took %v; want it at once", el)
		}
		requireUnchanged(t, ctx, n, chain)
		requireStore(t, n, store, 0)
	})

	t.Run("OverQuota", func(t *testing.T) {
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		c, _ := artifactsDial(t, n, n.Keys["admin"])
		data, d := artifactsBlob(t, artifactsQuota+1)
		_, err := c.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
		if !errors.Is(err, artifact.ErrResourceExhausted) || !strings.Contains(err.Error(), fmt.Sprintf("over its quota of %d bytes", artifactsQuota)) {
			t.Fatalf("uploading past the member quota: %v; want ResourceExhausted naming the quota", err)
		}
		requireUnchanged(t, ctx, n, chain)
		requireStore(t, n, store, 0)
	})

	t.Run("PoisonedPartial", func(t *testing.T) {
		// trainer-2 starts an upload of blob D with garbage and walks away;
		// trainer-1's upload of D must not resume from those bytes.
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		data, d := artifactsBlob(t, 3*artifact.ChunkSize+17)
		_, conn2 := artifactsDial(t, n, n.Keys["trainer-2"])
		hctx, cancel := context.WithCancel(ctx)
		artifactsHold(t, hctx, conn2, d, int64(len(data)), bytes.Repeat([]byte{0xee}, 2*artifact.ChunkSize))
		time.Sleep(200 * time.Millisecond) // let the server write them
		cancel()
		c1, _ := artifactsDial(t, n, n.Keys["trainer-1"])
		res, err := c1.Upload(ctx, d, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("trainer-1's upload after trainer-2's partial: %v", err)
		}
		if res.ResumedFrom != 0 {
			t.Errorf("trainer-1's upload resumed at %d, from bytes it did not send", res.ResumedFrom)
		}
		blob, err := os.ReadFile(filepath.Join(n.Dir, "coordinator", "artifacts", "blobs", d[:2], d))
		if err != nil || !bytes.Equal(blob, data) {
			t.Fatalf("stored blob: %v (equal %v)", err, bytes.Equal(blob, data))
		}
		// Only the honest blob (and its uploader's record) stays: the
		// abandoned partial is pruned after prune_after.
		want := []string{fmt.Sprintf("blobs/%s/%s %d", d[:2], d, len(data)), fmt.Sprintf("owners/%s/%s 0", n.ID("trainer-1"), d)}
		slices.Sort(want)
		deadline := time.Now().Add(artifactsPrune + 5*time.Second)
		for {
			got := filesMissing(storeFiles(t, n), store)
			if slices.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("new files in the store %v; want only %v", got, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
		requireUnchanged(t, ctx, n, chain)
	})

	t.Run("HeldIdleUpload", func(t *testing.T) {
		// trainer-2 opens an upload of blob D, sends one chunk and holds
		// the stream; trainer-1's upload of D goes through meanwhile, and
		// the server closes the held stream after the idle timeout.
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		data, d := artifactsBlob(t, 2*artifact.ChunkSize)
		_, conn2 := artifactsDial(t, n, n.Keys["trainer-2"])
		hctx, cancel := context.WithTimeout(ctx, artifactsIdle+20*time.Second)
		defer cancel()
		start := time.Now()
		held := artifactsHold(t, hctx, conn2, d, int64(len(data)), data[:artifact.ChunkSize])
		c1, _ := artifactsDial(t, n, n.Keys["trainer-1"])
		uctx, ucancel := context.WithTimeout(ctx, artifactsIdle+20*time.Second)
		ustart := time.Now()
		_, err := c1.Upload(uctx, d, bytes.NewReader(data), int64(len(data)))
		ucancel()
		if err != nil {
			t.Fatalf("trainer-1's upload while trainer-2 holds one of the same blob: %v", err)
		}
		if el := time.Since(ustart); el >= artifactsIdle {
			t.Fatalf("trainer-1's upload took %v: it waited for trainer-2's held stream", el)
		}
		_, err = held.Recv()
		el := time.Since(start)
		if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "idle timeout") {
			t.Fatalf("the held stream ended with %v; want DeadlineExceeded naming the idle timeout", err)
		}
		if el < artifactsIdle || el > artifactsIdle+10*time.Second {
			t.Errorf("the held stream was closed after %v; want about the idle timeout %v", el, artifactsIdle)
		}
		want := []string{fmt.Sprintf("blobs/%s/%s %d", d[:2], d, len(data)), fmt.Sprintf("owners/%s/%s 0", n.ID("trainer-1"), d)}
		slices.Sort(want)
		deadline := time.Now().Add(artifactsPrune + 5*time.Second)
		for {
			got := filesMissing(storeFiles(t, n), store)
			if slices.Equal(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("new files in the store %v; want only %v", got, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
		requireUnchanged(t, ctx, n, chain)
	})

	t.Run("EvalDataOutsideRoot", func(t *testing.T) {
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		job, err := os.ReadFile(n.JobFile)
		if err != nil {
			t.Fatal(err)
		}
		outside := filepath.Join(n.Dir, "coordinator.yaml")
		if err := os.Symlink(outside, filepath.Join(n.EvalDataRoot(), "link.jsonl")); err != nil {
			t.Fatal(err)
		}
		conn := artifactsCoordinator(t, n, "admin")
		for i, tc := range []struct{ data, want string }{
			{outside, "is an absolute path"},
			{"../coordinator.yaml", "leaves the coordinator's eval_data_root"},
			{"link.jsonl", "eval_data_root"},
		} {
			y := jobWithEval(t, job, fmt.Sprintf("artifacts-eval-%d", i), tc.data)
			_, err := conn.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: y, Source: n.JobFile})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "eval.data") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("launch with eval.data %s: %v; want InvalidArgument naming eval.data: %s", tc.data, err, tc.want)
			}
		}
		requireUnchanged(t, ctx, n, chain)
		requireStore(t, n, store, 0)
	})

	t.Run("JoinFlood", func(t *testing.T) {
		// trainer-1 holds its running session; joining again and again
		// never leaves it more than MaxSessionsPerTrainer sessions: each
		// new one replaces the oldest that never streamed.
		chain := waitSettled(t, ctx, n)
		conn := artifactsCoordinator(t, n, "trainer-1")
		key := n.Keys["trainer-1"]
		join := func() (string, error) {
			ch, err := conn.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
			if err != nil {
				return "", err
			}
			resp, err := conn.Join(ctx, &coordinatorv1.JoinRequest{PublicKey: key.Public().(ed25519.PublicKey), Challenge: ch.Challenge,
				Signature: client.SignChallenge(key, ch.Challenge)})
			if err != nil {
				return "", err
			}
			return resp.Session, nil
		}
		var sessions []string
		for range 5 {
			sid, err := join()
			if err != nil {
				t.Fatalf("trainer-1 joining again: %v", err)
			}
			sessions = append(sessions, sid)
		}
		// Every session but the newest was dropped: its Tasks stream is refused.
		for i, sid := range sessions[:len(sessions)-1] {
			st, err := conn.Tasks(ctx, &coordinatorv1.TasksRequest{Session: sid})
			if err == nil {
				_, err = st.Recv()
			}
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "unknown or already streaming session") {
				t.Fatalf("Tasks on flood session %d: %v; want FailedPrecondition: the session was dropped", i, err)
			}
		}
		requireUnchanged(t, ctx, n, chain)
	})

	t.Run("CancelJob", func(t *testing.T) {
		// CancelJob: nobody but the job's launcher, the coordinator or an
		// admin stops a job, and an ended or unknown job has nothing to
		// cancel; each refusal leaves the chain as it was.
		chain := waitSettled(t, ctx, n)
		trainer := artifactsCoordinator(t, n, "trainer-1")
		for _, tc := range []struct {
			job  string
			code codes.Code
			want string
		}{
			{n.JobName, codes.FailedPrecondition, "has ended"},
			{"no-such-job", codes.NotFound, "not running on this coordinator"},
		} {
			_, err := trainer.CancelJob(ctx, &coordinatorv1.CancelJobRequest{JobId: tc.job, Reason: "attack"})
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("trainer-1 cancelling %s: %v; want %s naming %q", tc.job, err, tc.code, tc.want)
			}
		}
		requireUnchanged(t, ctx, n, chain)

		// A job that waits for more trainers than joined holds the
		// coordinator: a trainer and the aggregator may not cancel it.
		job, err := os.ReadFile(n.JobFile)
		if err != nil {
			t.Fatal(err)
		}
		y := jobWithEval(t, job, "artifacts-waiting", "eval.jsonl")
		y = []byte(regexp.MustCompile(`\b(min|max):(\s*)\d+`).ReplaceAllString(string(y), "${1}:${2}5"))
		if j, err := coordinator.ParseJob("waiting.yaml", y); err != nil || j.Trainers.Min != 5 || j.Trainers.Max != 5 {
			t.Fatalf("job needing 5 trainers: %v (%+v)", err, j)
		}
		admin := artifactsCoordinator(t, n, "admin")
		if _, err := admin.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: y, Source: n.JobFile}); err != nil {
			t.Fatalf("admin launching a job that waits for 5 trainers: %v", err)
		}
		chain = waitSettled(t, ctx, n)
		for _, who := range []string{"trainer-1", "aggregator"} {
			_, err := artifactsCoordinator(t, n, who).CancelJob(ctx, &coordinatorv1.CancelJobRequest{JobId: "artifacts-waiting", Reason: "attack"})
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s cancelling the admin's waiting job: %v; want PermissionDenied", who, err)
			}
		}
		requireUnchanged(t, ctx, n, chain)
		res, err := admin.CancelJob(ctx, &coordinatorv1.CancelJobRequest{JobId: "artifacts-waiting", Reason: "needs 5 trainers"})
		if err != nil || res.Height == 0 {
			t.Fatalf("the admin cancelling its own waiting job: %v (%v)", err, res)
		}
	})
}

// artifactsCoordinator connects to the coordinator service as the named
// devnet identity.
func artifactsCoordinator(t *testing.T, n *devnet.Net, as string) coordinatorv1.CoordinatorClient {
	t.Helper()
	opt, err := tlsid.DialOption(n.Keys[as], tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.Coordinator, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return coordinatorv1.NewCoordinatorClient(conn)
}
