package adversarial

// Attacks on a whole running network that today's code already refuses:
// joining the coordinator without being a trainer, or as someone else;
// uploads to the artifact store that are not what they announce; and
// malformed safetensors updates submitted into real rounds, which the
// aggregator must reject on the ledger (UpdateRejected, with the reason)
// and keep out of the model.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	artifactv1 "github.com/fedtune/fedtune/api/artifact/v1"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

// exMalformed is one way a trainer can break its update file, and what the
// aggregator's rejection must say about it.
type exMalformed struct {
	name    string
	want    []string // in the UpdateRejected reason
	corrupt func(t trainer.Task, path string) error
}

// exMalformations, two per round: trainer-2 sends the first of each pair,
// trainer-3 the second; trainer-1 stays honest, so every round commits.
var exMalformations = [][2]exMalformed{
	{
		{"TruncatedHeader", []string{"header length", "runs past the end of the", "truncated"}, exEditFile(func(b []byte) ([]byte, error) {
			n := binary.LittleEndian.Uint64(b[:8])
			return b[:8+n/2], nil
		})},
		{"HugeHeaderLength", []string{"header length 1125899906842624 exceeds the"}, exEditFile(func(b []byte) ([]byte, error) {
			binary.LittleEndian.PutUint64(b[:8], 1<<50)
			return b, nil
		})},
	},
	{
		{"OverlappingOffsets", []string{"overlap the previous tensor"}, exEditHeader(func(es map[string]*exEntry) error {
			// Move the second tensor of the data buffer 4 bytes back.
			var second *exEntry
			for _, e := range es {
				if e.Offsets[0] > 0 && (second == nil || e.Offsets[0] < second.Offsets[0]) {
					second = e
				}
			}
			if second == nil {
				return fmt.Errorf("the update has fewer than two tensors")
			}
			second.Offsets[0] -= 4
			second.Offsets[1] -= 4
			return nil
		})},
		{"OffsetsPastTheEnd", []string{"run past the end of the", "data buffer"}, exEditFile(func(b []byte) ([]byte, error) {
			return b[:len(b)-4], nil
		})},
	},
	{
		{"NaN", []string{"is NaN"}, func(t trainer.Task, path string) error {
			ad, err := trainer.ReadAdapter(path, *t.Train.LoRA)
			if err != nil {
				return err
			}
			names := make([]string, 0, len(ad.Tensors))
			for name := range ad.Tensors {
				names = append(names, name)
			}
			sort.Strings(names)
			ad.Tensors[names[0]].Data[3] = float32(math.NaN())
			_, err = trainer.WriteUpdate(path, ad.Tensors, t.Compression, t.Int8Block)
			return err
		}},
		{"WrongShape", []string{"shape"}, exEditHeader(func(es map[string]*exEntry) error {
			// Transpose one 2-D tensor's shape: same size, wrong layout.
			names := make([]string, 0, len(es))
			for name := range es {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				if s := es[name].Shape; len(s) == 2 && s[0] != s[1] {
					s[0], s[1] = s[1], s[0]
					return nil
				}
			}
			return fmt.Errorf("the update has no non-square 2-D tensor")
		})},
	},
}

// exEditFile corrupts an update file's bytes.
func exEditFile(edit func([]byte) ([]byte, error)) func(trainer.Task, string) error {
	return func(_ trainer.Task, path string) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if b, err = edit(b); err != nil {
			return err
		}
		return os.WriteFile(path, b, 0o644)
	}
}

// exEntry is one tensor entry of a safetensors header.
type exEntry struct {
	DType   string   `json:"dtype"`
	Shape   []int64  `json:"shape"`
	Offsets [2]int64 `json:"data_offsets"`
}

// exEditHeader rewrites an update file's header (tensor entries by name;
// __metadata__ kept) in front of the same data buffer.
func exEditHeader(edit func(map[string]*exEntry) error) func(trainer.Task, string) error {
	return exEditFile(func(b []byte) ([]byte, error) {
		n := binary.LittleEndian.Uint64(b[:8])
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
			return nil, err
		}
		es := map[string]*exEntry{}
		for name, v := range raw {
			if name == "__metadata__" {
				continue
			}
			var e exEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return nil, err
			}
			es[name] = &e
		}
		if err := edit(es); err != nil {
			return nil, err
		}
		for name, e := range es {
			v, err := json.Marshal(e)
			if err != nil {
				return nil, err
			}
			raw[name] = v
		}
		hdr, err := json.Marshal(raw)
		if err != nil {
			return nil, err
		}
		out := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
		return append(append(out, hdr...), b[8+n:]...), nil
	})
}

// exBadBackend trains honestly, then breaks the update file as the round's
// malformation says, and remembers the digest of what it sent.
type exBadBackend struct {
	trainer.GorgoniaBackend
	which int // 0: trainer-2's column of exMalformations, 1: trainer-3's

	mu   sync.Mutex
	sent map[uint64]string // round -> update digest
}

func (b *exBadBackend) Fit(ctx context.Context, t trainer.Task, d trainer.Data) (trainer.Update, error) {
	u, err := b.GorgoniaBackend.Fit(ctx, t, d)
	if err != nil || t.Round < 1 || int(t.Round) > len(exMalformations) {
		return u, err
	}
	if err := exMalformations[t.Round-1][b.which].corrupt(t, u.Path); err != nil {
		return u, fmt.Errorf("corrupt the update: %w", err)
	}
	if u.Digest, err = digest.File(u.Path); err != nil {
		return u, err
	}
	b.mu.Lock()
	b.sent[t.Round] = u.Digest
	b.mu.Unlock()
	return u, nil
}

// exDial opens a TLS connection to the coordinator (and its artifact
// store) as the holder of key.
func exDial(t *testing.T, n *devnet.Net, key ed25519.PrivateKey) *grpc.ClientConn {
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

// exJoined is the sorted list of trainers the coordinator has admitted.
func exJoined(t *testing.T, ctx context.Context, n *devnet.Net) []string {
	t.Helper()
	st, err := coordinatorv1.NewCoordinatorClient(exDial(t, n, n.Keys["admin"])).Status(ctx, &coordinatorv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(slices.Values(st.Joined))
}

// exRequireStatus requires a gRPC error with code whose message contains
// every one of want.
func exRequireStatus(t *testing.T, err error, code codes.Code, want ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v; want %s", err, code)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not say %q", err, w)
		}
	}
	t.Logf("refused: %v", err)
}

// exUpload streams an upload header then chunks as the holder of key, and
// returns the server's verdict.
func exUpload(ctx context.Context, t *testing.T, n *devnet.Net, key ed25519.PrivateKey, digest string, size int64, chunks ...[]byte) error {
	t.Helper()
	st, err := artifactv1.NewArtifactsClient(exDial(t, n, key)).Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A Send fails (io.EOF) once the server has ended the stream, which it
	// may do before reading anything; Recv then says why.
	if err := st.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Digest: digest, Size: size}}}); err == nil {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		if resp.GetReady() == nil {
			t.Fatalf("upload %s: the server answered the header with %v, not ready", digest, resp)
		}
		for _, c := range chunks {
			if err := st.Send(&artifactv1.UploadRequest{Msg: &artifactv1.UploadRequest_Chunk{Chunk: c}}); err != nil {
				break
			}
		}
		_ = st.CloseSend()
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		if resp.GetDone() != nil {
			return nil
		}
	}
}

// exJoin asks for a challenge as the TLS identity conn holds, and answers
// it with join (which signs the challenge as it likes).
func exJoin(ctx context.Context, t *testing.T, conn *grpc.ClientConn, join func(challenge []byte) *coordinatorv1.JoinRequest) (*coordinatorv1.JoinRequest, error) {
	t.Helper()
	c := coordinatorv1.NewCoordinatorClient(conn)
	ch, err := c.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	req := join(ch.Challenge)
	_, err = c.Join(ctx, req)
	return req, err
}

// exSignedJoin is an honest join request of key with datasets.
func exSignedJoin(key ed25519.PrivateKey, datasets ...string) func([]byte) *coordinatorv1.JoinRequest {
	return func(ch []byte) *coordinatorv1.JoinRequest {
		return &coordinatorv1.JoinRequest{PublicKey: key.Public().(ed25519.PublicKey), Challenge: ch,
			Signature: client.SignChallenge(key, ch), Datasets: datasets}
	}
}

// exLedgerTxs decodes every tx on the chain, in order, as node i serves it.
func exLedgerTxs(t *testing.T, ctx context.Context, n *devnet.Net, i int) []*ledger.Tx {
	t.Helper()
	lc, err := n.Ledger(ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	var out []*ledger.Tx
	err = lc.Blocks(ctx, 0, false, func(vb *client.VerifiedBlock) error {
		for _, raw := range vb.Block.Txs {
			tx, err := ledger.DecodeTx(raw)
			if err != nil {
				return err
			}
			out = append(out, tx)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAttackNetworkDefences starts a whole network (three ledger nodes, a
// coordinator with its aggregator and artifact store, three trainers) and
// tries on it, while it is idle, to join the coordinator as what one is not
// and to store what one did not announce; then it runs a three-round job in
// which trainer-2 and trainer-3 submit malformed safetensors updates.
func TestAttackNetworkDefences(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx := testContext(t, 4*time.Minute)
	bad := []*exBadBackend{{which: 0, sent: map[uint64]string{}}, {which: 1, sent: map[uint64]string{}}}
	n := prepareNet(t, ctx, devnet.Options{Job: "internal/adversarial/testdata/malformed-lora.yaml", Rounds: len(exMalformations),
		TrainerBackend: func(i int) trainer.Backend {
			if i >= 2 {
				return bad[i-2]
			}
			return nil
		}})
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)

	// An auditor, added by the admin as a real network would: a member, but
	// not a trainer.
	auditor, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ac := exNewChain(t, ctx, nw)
	ac.commit("admin", ledger.MemberAdded{PublicKey: hex.EncodeToString(auditor.Public().(ed25519.PublicKey)), Role: ledger.RoleAuditor, Name: "auditor-1"})
	stranger, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	joined := exJoined(t, ctx, n)
	if len(joined) != 3 {
		t.Fatalf("%d trainers joined, want 3", len(joined))
	}
	// idle runs an attack on the idle network and requires that it moved
	// neither the chain, nor the artifact store, nor the coordinator's
	// trainer pool.
	idle := func(name string, fn func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			before, files := waitSettled(t, ctx, n), storeFiles(t, n)
			fn(t)
			requireUnchanged(t, ctx, n, before)
			if got := storeFiles(t, n); !slices.Equal(got, files) {
				t.Fatalf("the artifact store changed:\nbefore %v\nafter  %v", files, got)
			}
			if got := exJoined(t, ctx, n); !slices.Equal(got, joined) {
				t.Fatalf("the coordinator's trainers changed: %v, were %v", got, joined)
			}
		})
	}

	idle("JoinAsStranger", func(t *testing.T) {
		_, err := exJoin(ctx, t, exDial(t, n, stranger), exSignedJoin(stranger))
		exRequireStatus(t, err, codes.PermissionDenied, ledger.KeyID(stranger.Public().(ed25519.PublicKey))+" is not a member of the ledger")
	})
	idle("JoinAsAuditor", func(t *testing.T) {
		_, err := exJoin(ctx, t, exDial(t, n, auditor), exSignedJoin(auditor))
		exRequireStatus(t, err, codes.PermissionDenied, "has role auditor on the ledger, not trainer")
	})
	idle("JoinAsAggregator", func(t *testing.T) {
		k := n.Keys["aggregator"]
		_, err := exJoin(ctx, t, exDial(t, n, k), exSignedJoin(k))
		exRequireStatus(t, err, codes.PermissionDenied, "has role aggregator on the ledger, not trainer")
	})
	idle("JoinWithAnothersPublicKey", func(t *testing.T) {
		// trainer-1's public key, the challenge signed by the stranger.
		_, err := exJoin(ctx, t, exDial(t, n, stranger), func(ch []byte) *coordinatorv1.JoinRequest {
			return &coordinatorv1.JoinRequest{PublicKey: n.Keys["trainer-1"].Public().(ed25519.PublicKey), Challenge: ch,
				Signature: client.SignChallenge(stranger, ch)}
		})
		exRequireStatus(t, err, codes.Unauthenticated, "signature does not verify")
	})
	idle("JoinRelayedOverAnotherConnection", func(t *testing.T) {
		// A join signed by trainer-3's key, sent over the stranger's TLS
		// connection (as one relaying a signature it obtained would).
		_, err := exJoin(ctx, t, exDial(t, n, stranger), exSignedJoin(n.Keys["trainer-3"]))
		exRequireStatus(t, err, codes.PermissionDenied, "the TLS peer is", "but the join is signed by")
	})
	idle("JoinReplayedChallenge", func(t *testing.T) {
		conn := exDial(t, n, stranger)
		req, err := exJoin(ctx, t, conn, exSignedJoin(stranger))
		exRequireStatus(t, err, codes.PermissionDenied, "is not a member")
		_, err = coordinatorv1.NewCoordinatorClient(conn).Join(ctx, req)
		exRequireStatus(t, err, codes.FailedPrecondition, "unknown or expired challenge")
	})
	idle("JoinWithAnothersDataset", func(t *testing.T) {
		// trainer-2, a member, claiming trainer-1's dataset.
		ds := exDatasetOf(t, ctx, n, "trainer-1")
		k := n.Keys["trainer-2"]
		_, err := exJoin(ctx, t, exDial(t, n, k), exSignedJoin(k, ds))
		exRequireStatus(t, err, codes.PermissionDenied, "dataset "+ds+" was registered by")
	})

	blob := bytes.Repeat([]byte("fedtune adversarial blob\n"), 1000)
	sum := sha256.Sum256(blob)
	digest := hex.EncodeToString(sum[:])
	idle("UploadAsStranger", func(t *testing.T) {
		err := exUpload(ctx, t, n, stranger, digest, int64(len(blob)), blob)
		exRequireStatus(t, err, codes.PermissionDenied, "is not an active ledger member")
	})
	idle("UploadMoreThanAnnounced", func(t *testing.T) {
		err := exUpload(ctx, t, n, n.Keys["trainer-1"], digest, int64(len(blob))-100, blob[:len(blob)/2], blob[len(blob)/2:])
		exRequireStatus(t, err, codes.OutOfRange, fmt.Sprintf("more than the announced %d bytes; nothing kept", len(blob)-100))
	})
	idle("UploadDigestMismatch", func(t *testing.T) {
		other := bytes.ToUpper(blob)
		err := exUpload(ctx, t, n, n.Keys["trainer-2"], digest, int64(len(other)), other)
		exRequireStatus(t, err, codes.DataLoss, "digest mismatch", "nothing kept")
	})

	t.Run("MalformedUpdates", func(t *testing.T) {
		exMalformedRounds(t, ctx, n, bad)
	})
}

// exRound reads round r of the devnet's job from a ledger node.
func exRound(t *testing.T, ctx context.Context, n *devnet.Net, r uint64) *ledger.Round {
	t.Helper()
	lc, err := n.Ledger(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	rd, err := lc.Round(ctx, n.JobName, r)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

// exDatasetOf returns the dataset digest the named trainer registered.
func exDatasetOf(t *testing.T, ctx context.Context, n *devnet.Net, name string) string {
	t.Helper()
	for _, tx := range exLedgerTxs(t, ctx, n, 0) {
		if b, ok := tx.Body.(ledger.DatasetRegistered); ok && tx.Signer == n.ID(name) {
			return b.Digest
		}
	}
	t.Fatalf("%s registered no dataset", name)
	return ""
}

// exMalformedRounds runs the job and checks, round by round, that each
// malformed update was rejected on the ledger by the aggregator with its
// reason, and that only trainer-1's update went into the model.
func exMalformedRounds(t *testing.T, ctx context.Context, n *devnet.Net, bad []*exBadBackend) {
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != len(exMalformations) {
		t.Fatalf("job ended %s (%s) with %d rounds; want done with %d", st.State, st.Detail, len(st.Rounds), len(exMalformations))
	}
	waitSettled(t, ctx, n)
	txs := exLedgerTxs(t, ctx, n, 1)
	honest := map[uint64]string{} // round -> trainer-1's update
	for _, tx := range txs {
		if b, ok := tx.Body.(ledger.UpdateSubmitted); ok && b.JobID == n.JobName && tx.Signer == n.ID("trainer-1") {
			honest[b.Round] = b.UpdateDigest
		}
	}
	for r, pair := range exMalformations {
		round := uint64(r + 1)
		// Every UpdateRejected and the RoundCommitted of this round.
		rejected := map[string]ledger.UpdateRejected{}
		var commits []ledger.RoundCommitted
		for _, tx := range txs {
			switch b := tx.Body.(type) {
			case ledger.UpdateRejected:
				if b.JobID == n.JobName && b.Round == round {
					if tx.Signer != n.ID("aggregator") {
						t.Errorf("round %d: UpdateRejected signed by %s, not the aggregator", round, tx.Signer)
					}
					rejected[b.UpdateDigest] = b
				}
			case ledger.RoundCommitted:
				if b.JobID == n.JobName && b.Round == round {
					commits = append(commits, b)
				}
			}
		}
		var sent []string
		for i, m := range pair {
			bad[i].mu.Lock()
			d := bad[i].sent[round]
			bad[i].mu.Unlock()
			sent = append(sent, d)
			t.Run(fmt.Sprintf("Round%d/%s", round, m.name), func(t *testing.T) {
				rej, ok := rejected[d]
				if d == "" || !ok {
					t.Fatalf("trainer-%d's malformed update %q was not rejected on the ledger (rejections: %v)", i+2, d, rejected)
				}
				for _, w := range m.want {
					if !strings.Contains(rej.Reason, w) {
						t.Fatalf("rejection reason %q does not say %q", rej.Reason, w)
					}
				}
				t.Logf("rejected: %s", rej.Reason)
			})
		}
		// The round's record on the ledger marks the same two, by the aggregator.
		rd := exRound(t, ctx, n, round)
		for _, u := range rd.Updates {
			if want, bad := rejected[u.UpdateDigest]; u.Rejected != bad || (bad && (u.RejectReason != want.Reason || u.RejectedBy != n.ID("aggregator"))) {
				t.Errorf("round %d: the ledger's record of %s's update: rejected %v (%q by %s)", round, n.TrainerName(u.Trainer), u.Rejected, u.RejectReason, u.RejectedBy)
			}
		}
		if len(rd.Updates) != 3 {
			t.Errorf("round %d has %d updates on the ledger, want 3", round, len(rd.Updates))
		}
		if len(rejected) != 2 {
			t.Errorf("round %d: %d UpdateRejected, want exactly the 2 malformed updates %v", round, len(rejected), sent)
		}
		if len(commits) != 1 {
			t.Fatalf("round %d: %d RoundCommitted, want 1", round, len(commits))
		}
		c := commits[0]
		if len(c.Contributors) != 1 || c.Contributors[0].Trainer != n.ID("trainer-1") || c.Contributors[0].UpdateDigest != honest[round] {
			t.Errorf("round %d committed contributors %+v; want trainer-1's update %s alone", round, c.Contributors, honest[round])
		}
		// FedAvg over one update is that update, bit for bit: nothing of
		// the malformed ones reached the model.
		if c.ModelDigest != honest[round] {
			t.Errorf("round %d committed model %s; FedAvg of trainer-1's update alone is %s", round, c.ModelDigest, honest[round])
		}
	}
}
