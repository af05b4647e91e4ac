package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"google.golang.org/grpc"
)

// gated holds a generation's tokens until open is closed.
type gated struct {
	inference.Generator
	entered chan struct{}
	open    chan struct{}
	once    sync.Once
}

func (g *gated) Generate(ctx context.Context, prompt []int, p inference.Params, yield func(int) bool) error {
	return g.Generator.Generate(ctx, prompt, p, func(tok int) bool {
		g.once.Do(func() { close(g.entered) })
		<-g.open
		return yield(tok)
	})
}

// waitLog waits until the log holds s.
func waitLog(t *testing.T, ctx context.Context, l *syncBuffer, s string) {
	t.Helper()
	for !strings.Contains(l.String(), s) {
		select {
		case <-ctx.Done():
			t.Fatalf("the log never said %q:\n%s", s, l.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// followNet is a devnet running a job for a follower test, with the
// clients a follower needs.
type followNet struct {
	n     *devnet.Net
	c     *client.Client
	ac    *artifact.Client
	coord coordinatorv1.CoordinatorClient
}

// startFollowNet starts a devnet on opts and, with launch, launches its
// job.
func startFollowNet(t *testing.T, ctx context.Context, opts devnet.Options, launch bool) *followNet {
	t.Helper()
	opts.Dir, opts.Repo, opts.InProcess = t.TempDir(), "../..", true
	n, err := devnet.Prepare(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nw.Stop() })
	if launch {
		if _, err := n.Launch(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	opt, err := tlsid.DialOption(n.Keys[devnet.InferenceName], tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	ac, err := artifact.Dial(n.Coordinator, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ac.Close() })
	conn, err := grpc.NewClient(n.Coordinator, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &followNet{n: n, c: c, ac: ac, coord: coordinatorv1.NewCoordinatorClient(conn)}
}

// follower returns a follower of job on fn, logging to log.
func (fn *followNet) follower(t *testing.T, job string, log io.Writer) *follower {
	return &follower{c: fn.c, ac: fn.ac, coord: fn.coord, coordID: fn.n.ID("coordinator"), job: job, base: fn.n.BaseModel, dir: t.TempDir(), id: job, slots: 2,
		log: slog.New(slog.NewTextHandler(log, nil)), retry: 50 * time.Millisecond, maxRetry: 200 * time.Millisecond, evalEvery: 200 * time.Millisecond}
}

// committed waits for round r of job to commit.
func (fn *followNet) committed(t *testing.T, ctx context.Context, job string, r uint64) *ledger.Round {
	t.Helper()
	for ctx.Err() == nil {
		rd, err := fn.c.Round(ctx, job, r)
		if err == nil && rd.Status == ledger.StatusCommitted {
			return rd
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("round %d not committed: %v", r, ctx.Err())
	return nil
}

// serveHTTP serves s on a loopback port and returns its base URL.
func serveHTTP(t *testing.T, s *inference.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

// TestServeFollowsJob: a follower started after round 1 of a 2-round
// devnet LoRA job serves round 1's model (its adapter settings read from
// the ledger's job config, no job file); a follower given a job file that
// is not the ledger's refuses round 2 and the server keeps round 1; the
// right follower swaps to round 2 when the block stream brings its
// RoundCommitted, and a stream in flight during the swap completes. The
// lineage then shows both rounds with the coordinator's eval losses, and
// the page plots one point per round. Then each lie of the ledger's
// records or the artifact store is refused with its reason.
func TestServeFollowsJob(t *testing.T) {
	if testing.Short() {
		t.Skip("devnet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fn := startFollowNet(t, ctx, devnet.Options{Trainers: 1, MinTrainers: 1, JobName: "follow", Rounds: 2, LocalSteps: 3, PretrainSteps: 2}, true)
	n, c := fn.n, fn.c
	var logs syncBuffer
	f := fn.follower(t, "follow", &logs)

	// Started after round 1: it serves round 1's model.
	r1 := fn.committed(t, ctx, "follow", 1)
	m1, err := f.load(ctx, r1)
	if err != nil {
		t.Fatal(err)
	}
	f.round.Store(1)
	f.next.Store(m1.Block.Height + 1)
	if m1.Adapter != r1.ModelDigest || m1.Block == nil {
		t.Fatalf("round 1 served adapter %s block %v, want %s", m1.Adapter, m1.Block, r1.ModelDigest)
	}
	if sp := f.spec; sp == nil || sp.lora == nil || sp.config != r1.ConfigDigest {
		t.Fatalf("job settings %+v, want a LoRA job of config %s", sp, r1.ConfigDigest)
	}
	g := &gated{Generator: m1.Gen, entered: make(chan struct{}), open: make(chan struct{})}
	m1.Gen = g
	s := inference.NewServer(m1, inference.Config{Logger: f.log, Receipter: inference.Signer{Key: n.Keys[devnet.InferenceName]}})
	defer s.Close()
	base := serveHTTP(t, s)
	url := base + "/v1/chat/completions"

	// A stream in flight on round 1's model.
	type result struct {
		body string
		err  error
	}
	streamed := make(chan result, 1)
	go func() {
		res, err := http.Post(url, "application/json", strings.NewReader(`{"model":"follow","stream":true,"max_tokens":8,"temperature":0,"messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			streamed <- result{err: err}
			return
		}
		defer res.Body.Close()
		var b strings.Builder
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
		}
		streamed <- result{b.String(), sc.Err()}
	}()
	select {
	case <-g.entered:
	case <-ctx.Done():
		t.Fatal("the stream did not start")
	}

	// Round 2 commits. A follower whose operator gave a job file that is
	// not the ledger's job refuses it: the server keeps round 1.
	r2 := fn.committed(t, ctx, "follow", 2)
	other, err := coordinator.LoadJob(n.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	other.Seed++
	var badLogs syncBuffer
	fb := fn.follower(t, "follow", &badLogs)
	fb.check = other
	fb.round.Store(1)
	fb.next.Store(m1.Block.Height + 1)
	bctx, bstop := context.WithCancel(ctx)
	bdone := make(chan struct{})
	go func() { fb.follow(bctx, s); close(bdone) }()
	waitLog(t, ctx, &badLogs, "not the job the ledger runs")
	waitLog(t, ctx, &badLogs, "retry_in") // refused, and tried again
	bstop()
	<-bdone
	if got := s.Model(); got != m1 || fb.roundNow() != 1 {
		t.Fatalf("after a refused round the server serves %s (round %d), want round 1's %s", got.Digest, fb.roundNow(), m1.Digest)
	}

	// The right follower swaps to round 2 while the stream waits.
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.follow(fctx, s); close(done) }()
	for f.roundNow() != 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("the follower did not swap to round 2:\n%s", logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	close(g.open)
	res := <-streamed
	if res.err != nil || !strings.Contains(res.body, "data: [DONE]") {
		t.Fatalf("the stream in flight during the swap: %v\n%s", res.err, res.body)
	}
	// New requests get round 2's model, their receipt naming its block.
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"model":"follow","max_tokens":4,"temperature":0,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	env, _, err := receiptParse(resp.Header.Get(inference.ReceiptHeader))
	if err != nil {
		t.Fatal(err)
	}
	lm2, err := c.Model(ctx, r2.ModelDigest)
	if err != nil {
		t.Fatal(err)
	}
	if env.Adapter != r2.ModelDigest || env.Block == nil || env.Block.Height != lm2.Height {
		t.Errorf("after the swap the receipt names adapter %s block %+v, want %s at height %d", env.Adapter, env.Block, r2.ModelDigest, lm2.Height)
	}
	m2 := s.Model()

	// audit receipt --ledger accepts that receipt. A node that merges the
	// job's adapter into another model the chain knows, and signs it, is
	// refused: the chain never committed that pair.
	rp := filepath.Join(t.TempDir(), "receipt.b64")
	if err := os.WriteFile(rp, []byte(resp.Header.Get(inference.ReceiptHeader)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, "audit", "receipt", rp, "--ledger", n.LedgerGRPC[0], "--genesis", n.GenesisPath()); !strings.Contains(out, "ok   adapter") || !strings.Contains(out, "ok   block") {
		t.Errorf("audit of the server's receipt:\n%s", out)
	}
	otherModel := digest.Bytes([]byte("another registered model"))
	if _, err := client.NewSigner(c, n.Keys["coordinator"]).Submit(ctx, ledger.ModelRegistered{Digest: otherModel, Name: "other", Licence: "CC0-1.0", Source: "test"}); err != nil {
		t.Fatal(err)
	}
	forged := *env
	forged.Model, forged.Signer, forged.PublicKey = otherModel, "", ""
	fenv, err := receipt.Sign(n.Keys[devnet.InferenceName], forged)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rp, fenv, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "audit", "receipt", rp, "--ledger", n.LedgerGRPC[0], "--genesis", n.GenesisPath()); err == nil ||
		!strings.Contains(err.Error(), "adapter: adapter "+r2.ModelDigest+" was committed by round 2 of job \"follow\", trained on base model "+env.Model+", not on the receipt's model "+otherModel) {
		t.Errorf("audit of the job's adapter on another model: %v", err)
	}

	// The lineage: both rounds, each with the eval loss its RoundEvaluated
	// recorded on the ledger, which is what the coordinator reports for
	// the model the ledger says it committed (the job evaluates every
	// round; the follower reads the lineage again until both are in).
	var l inference.Lineage
	for {
		l = getLineageJSON(t, base)
		if len(l.Rounds) == 2 && l.Rounds[0].EvalSource == inference.EvalFromLedger && l.Rounds[1].EvalSource == inference.EvalFromLedger {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("lineage without both rounds' eval losses: %+v\n%s", l, logs.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	stop()
	<-done
	st, err := fn.coord.Status(ctx, &coordinatorv1.StatusRequest{JobId: "follow"})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range l.Rounds {
		if r.Round != i+1 || len(r.Contributors) != 1 || r.Height == 0 {
			t.Errorf("lineage round %d: %+v", i+1, r)
		}
		for _, sr := range st.Rounds {
			if int(sr.Round) == r.Round && (sr.ModelDigest != r.Model || sr.EvalNll != *r.EvalLoss) {
				t.Errorf("lineage round %d: model %s eval %v, the coordinator reports %s %v", r.Round, r.Model, *r.EvalLoss, sr.ModelDigest, sr.EvalNll)
			}
		}
	}
	if l.Model != r2.ModelDigest || l.Job != "follow" || len(l.Datasets) != 1 || l.Datasets[0].Licence == "" || l.EvalSource != inference.EvalSourceLedger || l.Block == nil || l.Block.Height != lm2.Height {
		t.Errorf("lineage %+v", l)
	}
	for _, r := range l.Rounds {
		if len(r.Contributors) != 1 || r.Contributors[0].LossRemoved == nil {
			t.Errorf("lineage round %d: contributors %+v without their score", r.Round, r.Contributors)
		}
	}
	pagePlotPoints(t, base, 2)
	// With every round's loss on the ledger, the coordinator is not asked:
	// one that is not the job's owner changes nothing.
	fo := fn.follower(t, "follow", io.Discard)
	fo.coordID = n.ID("admin")
	if lo, err := fo.lineageOf(ctx, r2.ModelDigest); err != nil || len(lo.Rounds) != 2 || lo.Rounds[0].EvalSource != inference.EvalFromLedger || lo.EvalSource != inference.EvalSourceLedger {
		t.Errorf("lineage read beside a coordinator that is not the job's: %+v, %v", lo, err)
	}

	// Every lie is refused with its reason (load never swaps: the server
	// keeps round 2's model).
	cfgCopy := t.TempDir()
	if err := os.CopyFS(cfgCopy, os.DirFS(n.BaseModel)); err != nil {
		t.Fatal(err)
	}
	cfgData, err := os.ReadFile(filepath.Join(cfgCopy, model.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgCopy, model.ConfigFile), append(cfgData, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	// The node operator's copy of the base folder whose chat template
	// injects a system prompt of its own.
	if f.spec == nil || f.spec.tokenizer == "" {
		t.Fatalf("job settings %+v: the ledger registers the base model without a tokenizer digest", f.spec)
	}
	injected := injectSystemPrompt(t, n.BaseModel)
	noWeights := t.TempDir()
	if err := os.WriteFile(filepath.Join(noWeights, model.ConfigFile), cfgData, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgBlob, modelBlob := download(t, ctx, fn.ac, r2.ConfigDigest), download(t, ctx, fn.ac, r2.ModelDigest)
	lying := storeWith(t, ctx, map[string][]byte{r2.ConfigDigest: cfgBlob, r2.ModelDigest: []byte("not the committed adapter")})
	lyingConfig := storeWith(t, ctx, map[string][]byte{r2.ConfigDigest: bytes.Replace(cfgBlob, []byte(`"rank":`), []byte(`"rank":1`), 1), r2.ModelDigest: modelBlob})
	bare := storeWith(t, ctx, map[string][]byte{r2.ModelDigest: modelBlob})
	for _, tc := range []struct {
		name  string
		round func(ledger.Round) ledger.Round
		setup func(*follower)
		want  string
	}{
		{"a round naming a model the chain never committed", func(r ledger.Round) ledger.Round {
			r.ModelDigest = digest.Bytes([]byte("never committed"))
			return r
		}, nil, "is not a model of the chain"},
		{"a round naming another round's model", func(r ledger.Round) ledger.Round {
			r.ModelDigest = r1.ModelDigest
			return r
		}, nil, "was committed by round 1"},
		{"a round of another job", func(r ledger.Round) ledger.Round { r.JobID = "other"; return r }, nil, "not a committed round of"},
		{"a round not committed", func(r ledger.Round) ledger.Round { r.Status = ledger.StatusOpen; return r }, nil, "not a committed round of"},
		{"a config digest no one stored", func(r ledger.Round) ledger.Round {
			r.ConfigDigest = digest.Bytes([]byte("no such job config"))
			return r
		}, nil, "from the artifact store"},
		{"a job file that is not the ledger's job", nil, func(f *follower) { f.check = other }, "not the job the ledger runs"},
		{"a base model folder with another config", nil, func(f *follower) { f.base = cfgCopy }, "but the ledger registers base model"},
		{"a base model folder without the weights", nil, func(f *follower) { f.base = noWeights }, "--model"},
		{"a base model folder whose chat template injects a system prompt", nil, func(f *follower) { f.base = injected },
			"have tokenizer digest " + must(model.TokenizerDigest(injected)) + ", but the ledger registers base model " + f.spec.base + " with tokenizer digest " + f.spec.tokenizer},
		// Swapped after the job's settings (and the base folder) were
		// checked: the model loaded for the switch is refused.
		{"a chat template swapped after the base folder was checked", nil, func(fx *follower) {
			fx.base, fx.spec, fx.baseDigest = injected, f.spec, f.baseDigest
		}, "serving on --model " + injected + ": tokenizer or chat template not the registered one"},
		{"a rank that does not match the adapter's shapes", nil, func(fx *follower) {
			sp := *f.spec
			l := *sp.lora
			l.Rank *= 2
			sp.lora = &l
			fx.spec = &sp
		}, "rank"},
		{"targets that do not match the adapter's tensors", nil, func(fx *follower) {
			sp := *f.spec
			l := *sp.lora
			l.Targets = []string{"down_proj"}
			sp.lora = &l
			fx.spec = &sp
		}, "adapter"},
		{"an artifact store sending other bytes for the adapter", nil, func(f *follower) { f.ac = lying }, "digest"},
		{"an artifact store sending another job config", nil, func(f *follower) { f.ac = lyingConfig }, "digest"},
		{"an artifact store without the job config", nil, func(f *follower) { f.ac = bare }, "from the artifact store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			fx := fn.follower(t, "follow", &logs)
			if tc.setup != nil {
				tc.setup(fx)
			}
			rd := *r2
			if tc.round != nil {
				rd = tc.round(rd)
			}
			m, err := fx.load(ctx, &rd)
			if err == nil {
				m.Gen.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrRoundRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal saying %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if s.Model() != m2 {
				t.Fatal("the served model changed")
			}
		})
	}

	// Where the store lacks the job config, a --job-file with the
	// ledger's config digest stands in for it.
	fj := fn.follower(t, "follow", io.Discard)
	fj.ac = bare
	if fj.check, err = coordinator.LoadJob(n.JobFile); err != nil {
		t.Fatal(err)
	}
	mj, err := fj.load(ctx, r2)
	if err != nil {
		t.Fatalf("--job-file with the ledger's digest, store without the config: %v", err)
	}
	mj.Gen.Close()
	if mj.Adapter != r2.ModelDigest {
		t.Errorf("served adapter %s, want %s", mj.Adapter, r2.ModelDigest)
	}
}

// TestServeFollowsFullJob: `fedtune serve --ledger` started before a
// full fine-tuning job is launched (no job file) waits on the ledger's
// block stream, which breaks (every connection through a proxy to the
// ledger node is cut) and is reopened; when round 1 commits it fetches the
// full weights, checks their digest and serves them on the base folder's
// config and tokenizer, with receipts naming the committing block.
func TestServeFollowsFullJob(t *testing.T) {
	if testing.Short() {
		t.Skip("devnet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fn := startFollowNet(t, ctx, devnet.Options{Job: "configs/jobs/full-finetune.yaml", Trainers: 1, MinTrainers: 1,
		JobName: "follow-full", Rounds: 1, LocalSteps: 2, PretrainSteps: 2}, false)
	n := fn.n
	px := newCutProxy(t, n.LedgerGRPC[0])
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var out, logs syncBuffer
	fetchDir, receipts := t.TempDir(), t.TempDir()
	done := make(chan error, 1)
	go func() {
		done <- RunWith(sctx, []string{"serve", "--model", n.BaseModel, "--addr", "127.0.0.1:0", "--model-id", "follow-full",
			"--ledger", px.addr(), "--genesis", n.GenesisPath(), "--job", "follow-full",
			"--artifacts", n.Coordinator, "--artifacts-id", n.ID("coordinator"),
			"--key", filepath.Join(n.Dir, "keys", devnet.InferenceName+".key"), "--retry", "50ms", "--fetch-dir", fetchDir, "--receipts-dir", receipts}, &out, &logs)
	}()
	waitLog(t, ctx, &logs, "waiting for the job's first committed round")
	px.cut()
	waitLog(t, ctx, &logs, "block stream ended; reopening")
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`on (http://\S+)/v1/`)
	var base string
	for base == "" {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			base = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("not serving:\n%s", logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	r1 := fn.committed(t, ctx, "follow-full", 1)
	lm, err := fn.c.Model(ctx, r1.ModelDigest)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(`{"model":"follow-full","prompt":"hi","max_tokens":4,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("completion: %d %s", resp.StatusCode, body)
	}
	r, _, err := receiptParse(resp.Header.Get(inference.ReceiptHeader))
	if err != nil {
		t.Fatal(err)
	}
	if r.Model != r1.ModelDigest || r.Adapter != "" || r.Block == nil || r.Block.Height != lm.Height {
		t.Errorf("receipt names model %s adapter %q block %+v, want full weights %s committed at height %d", r.Model, r.Adapter, r.Block, r1.ModelDigest, lm.Height)
	}
	if l := getLineageJSON(t, base); l.Model != r1.ModelDigest || len(l.Rounds) != 1 || l.Rounds[0].Model != r1.ModelDigest {
		t.Errorf("lineage %+v", l)
	}
	// The answer's receipt passes the audit: signer, committed model,
	// cosigned block, and the answer replayed on the fetched weights.
	bundles, err := filepath.Glob(filepath.Join(receipts, "*.json"))
	if err != nil || len(bundles) != 1 {
		t.Fatalf("receipt bundles %v: %v", bundles, err)
	}
	audit := mustCLI(t, "audit", "receipt", bundles[0], "--ledger", n.LedgerGRPC[0], "--genesis", n.GenesisPath(),
		"--replay", "--model", filepath.Join(fetchDir, "model-"+r1.ModelDigest))
	// The round's model is a full fine-tune of the job's base model: its
	// receipt names the tokenizer digest the chain registers that with.
	baseTok, err := model.TokenizerDigest(n.BaseModel)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(audit, "ok   replay") || !strings.Contains(audit, "ok   tokenizer "+baseTok+" is the tokenizer digest the chain registers base model "+n.BaseDigest) {
		t.Errorf("audit receipt:\n%s", audit)
	}
	// The follower's metrics beside the server's.
	mr, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mr.Body)
	mr.Body.Close()
	for _, re := range []string{`(?m)^fedtune_serve_follow_round 1$`, `(?m)^fedtune_serve_follow_stream_reopens_total [1-9]`, `(?m)^fedtune_serve_follow_block_height [1-9]`} {
		if !regexp.MustCompile(re).Match(metrics) {
			t.Errorf("/metrics does not match %s", re)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// cutProxy forwards TCP connections to a target until cut closes every
// connection open through it (it keeps accepting new ones).
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, up)
			p.mu.Unlock()
			go func() { io.Copy(up, in); up.Close() }()
			go func() { io.Copy(in, up); in.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

// cut closes every connection open through the proxy.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// download reads blob d from ac.
func download(t *testing.T, ctx context.Context, ac *artifact.Client, d string) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := ac.Download(ctx, d, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// storeWith serves, without TLS, a store holding blobs: each written as
// the blob file of its digest key behind the store's back, whatever its
// bytes hash to.
func storeWith(t *testing.T, ctx context.Context, blobs map[string][]byte) *artifact.Client {
	t.Helper()
	st, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for d, b := range blobs {
		p, err := st.Path(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := artifact.NewServer(artifact.ServerConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go srv.Serve(sctx, ln, tlsid.InsecureServerOption())
	lc, err := artifact.Dial(ln.Addr().String(), tlsid.InsecureDialOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lc.Close() })
	return lc
}

// getLineageJSON reads the served lineage.
func getLineageJSON(t *testing.T, base string) inference.Lineage {
	t.Helper()
	resp, err := http.Get(base + inference.LineagePath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l inference.Lineage
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

// pagePlotPoints opens the page at base in headless chromium (skipped
// without one unless FEDTUNE_REQUIRE_BROWSER is set) and checks that its
// eval-loss plot has want points, one per round, labelled with their
// rounds.
func pagePlotPoints(t *testing.T, base string, want int) {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("FEDTUNE_REQUIRE_BROWSER") != "" {
			t.Fatal("chromium not found and FEDTUNE_REQUIRE_BROWSER is set: install it (make test-deps)")
		}
		t.Log("chromium not found: the page's plot is not checked (make test-deps installs it)")
		return
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel2 := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel2()
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	defer cancel3()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(`#lineage[data-loaded="true"] #plot svg`)); err != nil {
		t.Fatalf("page: %v", err)
	}
	rounds, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#plot svg circle.pt")).map(c => c.dataset.round)`))
	if err != nil {
		t.Fatalf("page: %v", err)
	}
	source, err := chromedp.Run(ctx, chromedp.Text(`#eval-source`))
	if err != nil {
		t.Fatalf("page: %v", err)
	}
	if len(rounds) != want {
		t.Fatalf("the page plots %d points (rounds %v), want %d", len(rounds), rounds, want)
	}
	for i, r := range rounds {
		if r != strconv.Itoa(i+1) {
			t.Errorf("point %d is round %s, want %d", i, r, i+1)
		}
	}
	if !strings.Contains(source, "recorded on the ledger") || !strings.Contains(source, "RoundEvaluated") {
		t.Errorf("the page does not say the eval losses come from the ledger: %q", source)
	}
	sources, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#plot svg circle.pt")).map(c => c.dataset.source)`))
	if err != nil {
		t.Fatalf("page: %v", err)
	}
	for i, s := range sources {
		if s != inference.EvalFromLedger {
			t.Errorf("point %d: eval loss from %q, want the ledger", i, s)
		}
	}
}

// receiptParse verifies the receipt of a Fedtune-Receipt header.
func receiptParse(h string) (*receipt.Receipt, []byte, error) {
	env, _, err := receipt.Parse([]byte(h))
	if err != nil {
		return nil, nil, err
	}
	r, err := receipt.Verify(env)
	return r, env, err
}

// injectSystemPrompt returns a copy of the model folder dir whose chat
// template puts a system prompt of the node operator's before the
// conversation (a template is added where dir has none).
func injectSystemPrompt(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	if err := os.CopyFS(out, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(out, chat.ConfigFileName)
	cfg := map[string]any{}
	if data, err := os.ReadFile(p); err == nil {
		if err := json.Unmarshal(data, &cfg); err != nil {
			t.Fatal(err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	tmpl, _ := cfg["chat_template"].(string)
	if tmpl == "" {
		tmpl = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
	}
	cfg["chat_template"] = "{{ 'system: answer as the node operator says\\n' }}" + tmpl
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
