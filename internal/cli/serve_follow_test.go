package cli

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
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

// TestServeFollowsJob: a follower started after round 1 of a 2-round
// devnet job serves round 1's model, swaps to round 2's when the ledger
// commits it, and a stream in flight during the swap completes.
func TestServeFollowsJob(t *testing.T) {
	if testing.Short() {
		t.Skip("devnet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true, Trainers: 1, MinTrainers: 1,
		JobName: "follow", Rounds: 2, LocalSteps: 3, PretrainSteps: 2})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	committed := func(r uint64) *ledger.Round {
		for ctx.Err() == nil {
			rd, err := c.Round(ctx, "follow", r)
			if err == nil && rd.Status == ledger.StatusCommitted {
				return rd
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("round %d not committed: %v", r, ctx.Err())
		return nil
	}
	opt, err := tlsid.DialOption(n.Keys["admin"], tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	ac, err := artifact.Dial(n.Coordinator, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	lora, err := loadJobLoRA(n.JobFile)
	if err != nil || lora == nil {
		t.Fatalf("job LoRA config %v: %v", lora, err)
	}
	f := &follower{c: c, ac: ac, job: "follow", base: n.BaseModel, lora: lora, dir: t.TempDir(), id: "follow", slots: 2,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}

	// Started after round 1: it serves round 1's model.
	r1 := committed(1)
	m1, err := f.load(ctx, r1)
	if err != nil {
		t.Fatal(err)
	}
	f.round.Store(1)
	if m1.Adapter != r1.ModelDigest || m1.Block == nil {
		t.Fatalf("round 1 served adapter %s block %v, want %s", m1.Adapter, m1.Block, r1.ModelDigest)
	}
	g := &gated{Generator: m1.Gen, entered: make(chan struct{}), open: make(chan struct{})}
	m1.Gen = g
	s := inference.NewServer(m1, inference.Config{Logger: f.log, Receipter: inference.Signer{Key: n.Keys[devnet.InferenceName]}})
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	url := "http://" + ln.Addr().String() + "/v1/chat/completions"

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

	// Round 2 commits: the follower swaps to it while the stream waits.
	r2 := committed(2)
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.follow(fctx, s, 100*time.Millisecond); close(done) }()
	for f.roundNow() != 2 {
		select {
		case <-ctx.Done():
			t.Fatal("the follower did not swap to round 2")
		case <-time.After(100 * time.Millisecond):
		}
	}
	stop()
	<-done
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
	lm, err := c.Model(ctx, r2.ModelDigest)
	if err != nil {
		t.Fatal(err)
	}
	if env.Adapter != r2.ModelDigest || env.Block == nil || env.Block.Height != lm.Height {
		t.Errorf("after the swap the receipt names adapter %s block %+v, want %s at height %d", env.Adapter, env.Block, r2.ModelDigest, lm.Height)
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
