package adversarial

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator"
	artifactv1 "github.com/fedtune/fedtune/api/artifact/v1"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// blobsPrune is how soon the coordinator in these attacks prunes an
// abandoned partial upload (a probe leaves an empty one behind).
const blobsPrune = 3 * time.Second

// blobsNet is a devnet of two trainers whose one-round job ("blobs") has
// run to the end, with what the attacks need from it.
type blobsNet struct {
	nw       *devnet.Network
	n        *devnet.Net
	lc       *client.Client
	updates  map[string]string // trainer name → its update in round 1
	datasets map[string]string // trainer name → its dataset
	update   string            // trainer-1's update
	size     int64             // its size in bytes
	base     string            // the job's base model
}

func blobsSetup(t *testing.T, ctx context.Context) *blobsNet {
	t.Helper()
	n := prepareNet(t, ctx, devnet.Options{JobName: "blobs", Trainers: 2, Rounds: 1, LocalSteps: 3, MinTrainers: 2})
	f, err := os.OpenFile(filepath.Join(n.Dir, "coordinator.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "artifacts:\n  prune_after: %s\n", blobsPrune)
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
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	r, err := lc.Round(ctx, "blobs", 1)
	if err != nil {
		t.Fatal(err)
	}
	b := &blobsNet{nw: nw, n: n, lc: lc, base: r.BaseModel, updates: map[string]string{}, datasets: map[string]string{}}
	for _, u := range r.Updates {
		name := n.TrainerName(u.Trainer)
		b.updates[name], b.datasets[name] = u.UpdateDigest, u.DatasetDigest
	}
	if b.update = b.updates["trainer-1"]; b.update == "" || b.updates["trainer-2"] == "" {
		t.Fatalf("round 1 has no update of trainer-1 or trainer-2: %+v", r.Updates)
	}
	fi, err := os.Stat(filepath.Join(n.Dir, "coordinator", "artifacts", "blobs", b.update[:2], b.update))
	if err != nil {
		t.Fatal(err)
	}
	b.size = fi.Size()
	return b
}

// blobsConn connects to the coordinator (artifact and coordinator
// services) with key.
func blobsConn(t *testing.T, n *devnet.Net, key ed25519.PrivateKey) *grpc.ClientConn {
	t.Helper()
	opt, err := tlsid.DialOption(key, tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.Coordinator, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// blobsDownloadDenied requires that who may not download the update of
// trainer owner, and receives none of its bytes.
func (b *blobsNet) blobsDownloadDenied(t *testing.T, ctx context.Context, who, owner string) {
	t.Helper()
	c := artifact.NewClient(blobsConn(t, b.n, b.n.Keys[who]))
	c.Retries = 0
	var buf bytes.Buffer
	_, err := c.Download(ctx, b.updates[owner], &buf)
	if !errors.Is(err, artifact.ErrPermissionDenied) || !strings.Contains(err.Error(), "it is the update of trainer "+b.n.ID(owner)[:16]) {
		t.Fatalf("%s downloading %s's update: %v; want PermissionDenied: it is %[2]s's update", who, owner, err)
	}
	if buf.Len() != 0 {
		t.Fatalf("%s received %d bytes of %s's update", who, buf.Len(), owner)
	}
}

// blobsMember adds a member of role with a fresh key (signed by the
// devnet's admin) and returns a signer for it.
func (b *blobsNet) blobsMember(t *testing.T, ctx context.Context, name string, role ledger.Role) *client.Signer {
	t.Helper()
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	body := ledger.MemberAdded{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Role: role, Name: name}
	if _, err := client.NewSigner(b.lc, b.n.Keys["admin"]).Submit(ctx, body); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	return client.NewSigner(b.lc, key)
}

// TestAttackBlobs tries, on a devnet whose job has run, to get at a
// trainer's update through the side doors of the artifact store: a rival
// coordinator registering it as a model, a rogue job committing it as its
// model, a member probing Upload and Status for it, a job naming
// it as eval data; and to lock trainers out of Join with a flood of
// challenges. Each fails with its reason; the refused txs leave the chain
// as it was, and no probe changes the store.
func TestAttackBlobs(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx := testContext(t, 4*time.Minute)
	b := blobsSetup(t, ctx)
	n := b.n
	trainer1 := n.ID("trainer-1")

	t.Run("RegisterUpdateAsModel", func(t *testing.T) {
		rival := b.blobsMember(t, ctx, "coordinator-2", ledger.RoleCoordinator)
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		h, err := rival.Submit(ctx, ledger.ModelRegistered{Digest: b.update, Name: "public now", Licence: "CC0-1.0", Source: "rival"})
		if err == nil {
			t.Fatalf("a rival coordinator registered trainer-1's update as a model at height %d", h)
		}
		want := fmt.Sprintf("model %s is the update trainer %s submitted to round 1 of job %q; a submitted update cannot be registered as a model", b.update, trainer1, "blobs")
		if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), want) {
			t.Fatalf("ModelRegistered of trainer-1's update: %v; want a rejection: %s", err, want)
		}
		requireUnchanged(t, ctx, n, chain)
		b.blobsDownloadDenied(t, ctx, "trainer-2", "trainer-1")
		requireStore(t, n, store, 0)
	})

	t.Run("RogueJobCommitsUpdate", func(t *testing.T) {
		// A rival coordinator's job, with its own aggregator: trainer-1
		// names trainer-2's update digest (read on the chain) as its own,
		// and the rogue aggregator commits it as the round's model. The
		// ledger refuses the commit; and were such a model on a chain, the
		// store would still not publish the update (ModelFreesUpdate).
		victim := b.updates["trainer-2"]
		rival := b.blobsMember(t, ctx, "coordinator-3", ledger.RoleCoordinator)
		rogue := b.blobsMember(t, ctx, "aggregator-3", ledger.RoleAggregator)
		st, err := aggregator.New("fedavg", nil)
		if err != nil {
			t.Fatal(err)
		}
		rc := ledger.RoundRecipe{Strategy: "fedavg", Params: map[string]string{}, Compression: "none", MinTrainers: 1, MaxTrainers: 1,
			Aggregators: []string{rogue.ID()}}
		for k, v := range st.Params() {
			rc.Params[k] = ledger.FormatParam(v)
		}
		steps := []struct {
			s    *client.Signer
			body ledger.TxBody
		}{
			{rival, ledger.JobRegistered{JobID: "blobs-rogue", Recipe: rc}},
			{rival, ledger.RoundOpened{JobID: "blobs-rogue", Round: 1, ConfigDigest: digestOf("rogue config"), BaseModel: b.base,
				Strategy: "fedavg", Trainers: []string{trainer1}, Deadline: time.Now().Add(time.Hour)}},
			{client.NewSigner(b.lc, n.Keys["trainer-1"]), ledger.UpdateSubmitted{JobID: "blobs-rogue", Round: 1, UpdateDigest: victim,
				DatasetDigest: b.datasets["trainer-1"], Samples: 1}},
		}
		for _, s := range steps {
			if _, err := s.s.Submit(ctx, s.body); err != nil {
				t.Fatalf("%s: %v", s.body.TxType(), err)
			}
		}
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		h, err := rogue.Submit(ctx, ledger.RoundCommitted{JobID: "blobs-rogue", Round: 1, ModelDigest: victim, Strategy: "fedavg", Params: rc.Params,
			Contributors: []ledger.Contribution{{Trainer: trainer1, UpdateDigest: victim, Weight: 1}}})
		if err == nil {
			t.Errorf("the rogue aggregator committed trainer-2's update as its round's model at height %d", h)
		} else {
			want := fmt.Sprintf("commits model %s, the update trainer %s submitted to round 1 of job %q; a round's model may equal only an update of that round", victim, n.ID("trainer-2"), "blobs")
			if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), want) {
				t.Fatalf("RoundCommitted of trainer-2's update: %v; want a rejection: %s", err, want)
			}
			requireUnchanged(t, ctx, n, chain)
		}
		b.blobsDownloadDenied(t, ctx, "trainer-1", "trainer-2")
		requireStore(t, n, store, 0)
	})

	t.Run("ProbeUploadAndStatus", func(t *testing.T) {
		// trainer-2 asks the store about trainer-1's update as an
		// uploader would: it must hear what it hears of an absent blob.
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		api := artifactv1.NewArtifactsClient(blobsConn(t, n, n.Keys["trainer-2"]))
		absent := digestOf("a blob nobody has")
		answer := func(d string) string {
			t.Helper()
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			up, err := api.Upload(sctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := up.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Digest: d, Size: b.size}}}); err != nil {
				t.Fatal(err)
			}
			r, err := up.Recv()
			if err != nil {
				return status.Code(err).String()
			}
			if rd := r.GetReady(); rd != nil {
				return fmt.Sprintf("ready at %d", rd.Offset)
			}
			return "done, existed " + fmt.Sprint(r.GetDone().GetExisted())
		}
		got, want := answer(b.update), answer(absent)
		if got != want || want != "ready at 0" {
			t.Errorf("upload header for trainer-1's update: %q; for an absent blob: %q; want both ready at 0", got, want)
		}
		for _, d := range []string{b.update, absent} {
			st, err := api.Status(ctx, &artifactv1.StatusRequest{Digest: d})
			if err != nil || st.Complete || st.Received != 0 {
				t.Errorf("status of %s: %v, %v; want not complete, nothing received (as for an absent blob)", d[:12], st, err)
			}
		}
		// trainer-1, whose update it is, is still told.
		c := artifact.NewClient(blobsConn(t, n, n.Keys["trainer-1"]))
		if st, err := c.Status(ctx, b.update); err != nil || !st.Complete || st.Received != b.size {
			t.Errorf("trainer-1's status of its own update: %+v, %v; want complete", st, err)
		}
		requireUnchanged(t, ctx, n, chain)
		// The probes' empty partial uploads are pruned.
		requireStore(t, n, store, blobsPrune+10*time.Second)
	})

	t.Run("EvalDataIsAnUpdate", func(t *testing.T) {
		chain, store := waitSettled(t, ctx, n), storeFiles(t, n)
		job, err := os.ReadFile(n.JobFile)
		if err != nil {
			t.Fatal(err)
		}
		y := jobWithEval(t, job, "blobs-eval", b.update)
		conn := coordinatorv1.NewCoordinatorClient(blobsConn(t, n, n.Keys["admin"]))
		_, err = conn.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: y, Source: n.JobFile})
		want := "eval.data: blob " + b.update + " is the update of trainer " + trainer1[:16]
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), want) {
			t.Fatalf("launch with eval.data naming trainer-1's update: %v; want InvalidArgument: %s", err, want)
		}
		requireUnchanged(t, ctx, n, chain)
		requireStore(t, n, store, 0)
	})

	t.Run("ChallengeFlood", func(t *testing.T) {
		// A stranger asks for challenges as fast as it can and answers
		// none; it is cut off at its limit, and trainer-2 still joins.
		chain := waitSettled(t, ctx, n)
		stranger, err := ledger.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		flood := coordinatorv1.NewCoordinatorClient(blobsConn(t, n, stranger))
		var refused error
		asked := 0
		for asked <= coordinator.MaxChallenges+1 && refused == nil {
			asked++
			_, refused = flood.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
		}
		if status.Code(refused) != codes.ResourceExhausted || !strings.Contains(refused.Error(), fmt.Sprintf("already holds %d unanswered join challenges", coordinator.MaxChallengesPerCaller)) {
			t.Fatalf("challenge %d of the flood: %v; want ResourceExhausted naming the per-caller limit", asked, refused)
		}
		if asked != coordinator.MaxChallengesPerCaller+1 {
			t.Fatalf("the flood was cut off at challenge %d; want %d", asked, coordinator.MaxChallengesPerCaller+1)
		}
		key := n.Keys["trainer-2"]
		conn := coordinatorv1.NewCoordinatorClient(blobsConn(t, n, key))
		ch, err := conn.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
		if err != nil {
			t.Fatalf("trainer-2's challenge during the flood: %v", err)
		}
		if _, err := conn.Join(ctx, &coordinatorv1.JoinRequest{PublicKey: key.Public().(ed25519.PublicKey), Challenge: ch.Challenge,
			Signature: client.SignChallenge(key, ch.Challenge)}); err != nil {
			t.Fatalf("trainer-2's join during the flood: %v", err)
		}
		requireUnchanged(t, ctx, n, chain)
	})
}
