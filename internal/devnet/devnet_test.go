package devnet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/aggregator/round"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/trainer"
)

// tlog sends slog output to t.Logf.
type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// prepare makes an in-process devnet with a quickly pre-trained base model.
func prepare(t *testing.T, ctx context.Context, o Options) *Net {
	t.Helper()
	o.Dir, o.Repo, o.InProcess = t.TempDir(), "../..", true
	o.Logger = testLogger(t)
	o.Out = tlog{t}
	if o.PretrainSteps == 0 {
		o.PretrainSteps = 40
	}
	if o.EvalData == "" {
		o.EvalData = "datasets/testdata/tasks/eval.jsonl"
	}
	n, err := Prepare(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// txsOf decodes every transaction on the chain, in order.
func txsOf(t *testing.T, ctx context.Context, c *client.Client) []*ledger.Tx {
	t.Helper()
	var out []*ledger.Tx
	err := c.Blocks(ctx, 0, false, func(vb *client.VerifiedBlock) error {
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

// canaries returns each shard's canary string.
func canaries(t *testing.T, n *Net) []string {
	t.Helper()
	var out []string
	for _, s := range n.Shards {
		f, err := os.Open(s)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if i := strings.Index(sc.Text(), "CANARY-"); i >= 0 {
				out = append(out, sc.Text()[i:i+len("CANARY-")+16])
			}
		}
		f.Close()
	}
	if len(out) != len(n.Shards) {
		t.Fatalf("found %d canaries in %d shards", len(out), len(n.Shards))
	}
	return out
}

func TestNoRaceNetworkTwoRounds(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n := prepare(t, ctx, Options{JobName: "e2e", Rounds: 2, LocalSteps: 10})
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	before, err := n.Eval(ctx, "")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("NonMemberRefused", func(t *testing.T) { testNonMember(t, ctx, n) })

	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 2 {
		t.Fatalf("job ended %s (%s) with %d rounds, want done with 2", st.State, st.Detail, len(st.Rounds))
	}
	lc, err := n.Ledger(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	txs := txsOf(t, ctx, lc)

	// The chain holds, per round, RoundOpened, one UpdateSubmitted per
	// trainer and RoundCommitted, each signed by its role.
	counts := map[string]int{}
	for _, tx := range txs {
		switch b := tx.Body.(type) {
		case ledger.RoundOpened:
			counts[fmt.Sprintf("%s/%d", b.TxType(), b.Round)]++
			checkSigner(t, tx, n.ID("coordinator"))
		case ledger.UpdateSubmitted:
			counts[fmt.Sprintf("%s/%d", b.TxType(), b.Round)]++
		case ledger.RoundCommitted:
			counts[fmt.Sprintf("%s/%d", b.TxType(), b.Round)]++
			checkSigner(t, tx, n.ID("aggregator"))
		case ledger.UpdateRejected, ledger.RoundFailed:
			t.Errorf("unexpected %s", b.TxType())
		}
	}
	for r := 1; r <= 2; r++ {
		for typ, want := range map[string]int{ledger.TypeRoundOpened: 1, ledger.TypeUpdateSubmitted: 3, ledger.TypeRoundCommitted: 1} {
			if got := counts[fmt.Sprintf("%s/%d", typ, r)]; got != want {
				t.Errorf("round %d: %d %s txs, want %d", r, got, typ, want)
			}
		}
	}

	job, err := coordinator.LoadJob(n.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	local := map[string]string{} // digest → fetched file
	fetch := func(d string) (string, error) {
		if p, ok := local[d]; ok {
			return p, nil
		}
		p := filepath.Join(work, d)
		if err := n.Fetch(ctx, d, p); err != nil {
			return "", err
		}
		local[d] = p
		return p, nil
	}
	// The initial adapter every trainer starts from is derived from the job.
	base, err := model.Load(n.BaseModel)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := coordinator.InitialAdapter(job, base.Config)
	if err != nil {
		t.Fatal(err)
	}
	initDir := filepath.Join(work, "init")
	initDigest, err := ad.Save(initDir)
	if err != nil {
		t.Fatal(err)
	}
	local[initDigest] = filepath.Join(initDir, model.AdapterWeightsFile)

	global := initDigest
	for _, r := range st.Rounds {
		// The committed digest is the SHA-256 of the stored model.
		p, err := fetch(r.ModelDigest)
		if err != nil {
			t.Fatal(err)
		}
		if d, err := digest.File(p); err != nil || d != r.ModelDigest {
			t.Errorf("round %d: stored model hashes to %s, ledger says %s (%v)", r.Round, d, r.ModelDigest, err)
		}
		// Aggregating the stored updates offline reproduces it.
		a := round.Task{JobID: job.Name, Round: r.Round, Strategy: job.Strategy.Name,
			Params: job.Strategy.Params, Options: job.AggregatorOptions()}
		for _, u := range r.Updates {
			a.Inputs = append(a.Inputs, round.Input{Trainer: u.Trainer, Digest: u.UpdateDigest, Dataset: u.DatasetDigest, Samples: u.Samples})
		}
		req, err := a.Request(fetch, global)
		if err != nil {
			t.Fatal(err)
		}
		req.Out = filepath.Join(work, fmt.Sprintf("offline-r%d.safetensors", r.Round))
		res, err := aggregator.Aggregate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if res.Digest != r.ModelDigest {
			t.Errorf("round %d: offline aggregation gives %s, the ledger committed %s", r.Round, res.Digest, r.ModelDigest)
		}
		if len(r.Updates) != 3 {
			t.Errorf("round %d: %d updates, want 3", r.Round, len(r.Updates))
		}
		for _, u := range r.Updates {
			if l, ok := u.Metrics["loss"]; !ok || math.IsNaN(l) || l <= 0 {
				t.Errorf("round %d: trainer %s reported loss %v", r.Round, u.Trainer[:8], u.Metrics)
			}
		}
		global = r.ModelDigest
	}

	// Fine-tuning helped on held-out data of the trainers' task.
	after, err := n.Eval(ctx, local[global])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("eval mean NLL before %.4f after %.4f", before.MeanNLL, after.MeanNLL)
	if !(after.MeanNLL < before.MeanNLL) {
		t.Errorf("eval mean NLL after %.4f is not below before %.4f", after.MeanNLL, before.MeanNLL)
	}

	// The coordinator evaluated every committed round's model on the job's
	// eval data (eval.every 1) before calling the job done; the last one
	// scores what the devnet's own evaluation of the final model gives.
	for _, r := range st.Rounds {
		if !r.Evaluated || math.IsNaN(r.EvalNll) || math.IsInf(r.EvalNll, 0) || !(r.EvalNll > 0) ||
			math.Abs(r.EvalPerplexity-math.Exp(r.EvalNll)) > 1e-9*r.EvalPerplexity {
			t.Errorf("round %d: evaluated %v, NLL %v, perplexity %v", r.Round, r.Evaluated, r.EvalNll, r.EvalPerplexity)
		}
	}
	if job.Eval.Data == "" || job.Eval.Every > 1 {
		t.Fatalf("the devnet job's eval section %+v does not evaluate every round", job.Eval)
	}
	taskEval := n.EvalData
	n.EvalData = filepath.Join(n.EvalDataRoot(), job.Eval.Data)
	final, err := n.Eval(ctx, local[global])
	n.EvalData = taskEval
	if err != nil {
		t.Fatal(err)
	}
	last := st.Rounds[len(st.Rounds)-1]
	t.Logf("coordinator eval of round %d: NLL %.6f (perplexity %.4f); devnet eval %.6f", last.Round, last.EvalNll, last.EvalPerplexity, final.MeanNLL)
	if math.Abs(last.EvalNll-final.MeanNLL) > 1e-9 {
		t.Errorf("coordinator eval NLL of the final model %.12f, devnet Eval %.12f", last.EvalNll, final.MeanNLL)
	}

	// The lineage leads back to the base model through both rounds.
	l, err := n.Lineage(ctx, global)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Rounds) != 2 || l.Base.Digest != n.BaseDigest || len(l.Datasets) != 3 {
		t.Errorf("lineage: %d rounds, base %s, %d datasets; want 2, %s, 3", len(l.Rounds), l.Base.Digest, len(l.Datasets), n.BaseDigest)
	}

	// No canary of any shard reached the ledger or the coordinator.
	t.Run("Privacy", func(t *testing.T) {
		secrets := canaries(t, n)
		var raws [][]byte
		for _, tx := range txs {
			raws = append(raws, tx.Raw)
		}
		err := filepath.WalkDir(n.path("coordinator"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err == nil {
				raws = append(raws, b)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range local {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			raws = append(raws, b)
		}
		for _, s := range secrets {
			for _, b := range raws {
				if bytes.Contains(b, []byte(s)) {
					t.Fatalf("canary %s left its trainer", s)
				}
			}
		}
		t.Logf("%d canaries absent from %d txs, coordinator files and artifacts", len(secrets), len(txs))
	})
}

func checkSigner(t *testing.T, tx *ledger.Tx, want string) {
	t.Helper()
	if tx.Signer != want {
		t.Errorf("%s signed by %s, want %s", tx.Body.TxType(), tx.Signer[:8], want[:8])
	}
}

// testNonMember checks that a key the ledger does not know cannot join.
func testNonMember(t *testing.T, ctx context.Context, n *Net) {
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	n.Keys["stranger"] = key
	defer delete(n.Keys, "stranger")
	conn, err := n.dial("stranger")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := coordinatorv1.NewCoordinatorClient(conn)
	var ch *coordinatorv1.ChallengeResponse
	for {
		if ch, err = c.Challenge(ctx, &coordinatorv1.ChallengeRequest{}); status.Code(err) != codes.Unavailable {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Join(ctx, &coordinatorv1.JoinRequest{PublicKey: key.Public().(ed25519.PublicKey), Challenge: ch.Challenge,
		Signature: client.SignChallenge(key, ch.Challenge)})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not a member") {
		t.Errorf("non-member join: got %v, want PermissionDenied naming non-membership", err)
	}
	// A forged answer (signed by another key) is refused too.
	ch, err = c.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Join(ctx, &coordinatorv1.JoinRequest{PublicKey: n.Keys["trainer-1"].Public().(ed25519.PublicKey), Challenge: ch.Challenge,
		Signature: client.SignChallenge(key, ch.Challenge)})
	if c := status.Code(err); c != codes.Unauthenticated && c != codes.PermissionDenied {
		t.Errorf("forged join: got %v, want refused", err)
	}
	// A trainer node with that key stops with ErrRefused.
	dir := t.TempDir()
	if err := ledger.SaveKey(filepath.Join(dir, "k.key"), key); err != nil {
		t.Fatal(err)
	}
	tn, err := trainer.New(trainer.Config{KeyFile: filepath.Join(dir, "k.key"), Coordinator: n.Coordinator, CoordinatorID: n.ID("coordinator"),
		Ledger: n.LedgerGRPC[0], Data: n.Shards[0], Licence: "CC0-1.0", WorkDir: dir}, trainer.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.Run(ctx); !errors.Is(err, trainer.ErrRefused) {
		t.Errorf("non-member trainer Run: %v, want ErrRefused", err)
	}
}
