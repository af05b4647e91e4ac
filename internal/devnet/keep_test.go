package devnet_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/cli"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/internal/tlsid"
)

// TestNoRaceNetworkKeep keeps a devnet up after its job and follows the
// guide it prints, command by command, through the fedtune command line:
// a new trainer is made, added to the ledger and joins; the second job the
// guide launches trains with it; the audit commands verify the model and
// the chain. With --verify, a verifier node replays every update of both
// jobs before their rounds commit, and the guide shows the command it runs
// as and the round query that shows its verdicts. Cancelling the context
// then stops the network cleanly.
func TestNoRaceNetworkKeep(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Every line of the display, as it comes.
	pr, pw := io.Pipe()
	display := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			display <- sc.Text()
		}
		close(display)
	}()
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true, Keep: true, Verify: true,
		Trainers: 1, MinTrainers: 1, JobName: "keep", Rounds: 1, LocalSteps: 3, PretrainSteps: 2,
		Out: pw, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	upCtx, stopUp := context.WithCancel(ctx)
	defer stopUp()
	upErr := make(chan error, 1)
	go func() { upErr <- n.UpKeep(upCtx, nil); pw.Close() }()

	// Read the display up to the guide's last line; keep reading it after.
	var guide []string
	for l := range display {
		t.Log(l)
		guide = append(guide, l)
		if l == devnet.KeptLine {
			break
		}
	}
	if !slices.Contains(guide, devnet.KeptLine) {
		t.Fatalf("no guide before the display ended: %v", <-upErr)
	}
	rest := make(chan []string, 1)
	go func() {
		var after []string
		for l := range display {
			after = append(after, l)
		}
		rest <- after
	}()

	cmds := map[string][]string{}
	var order []string
	for _, l := range guide {
		if !strings.HasPrefix(l, "fedtune ") {
			continue
		}
		args, err := shellSplit(l)
		if err != nil {
			t.Fatalf("guide line %q: %v", l, err)
		}
		if len(args) < 3 || args[0] != "fedtune" {
			continue
		}
		what := args[1] + " " + args[2]
		cmds[what] = args[1:]
		order = append(order, what)
	}
	want := []string{"verifier --ledger", "ledger query", "trainer init", "admin add-member", "trainer join", "round launch", "round status", "round cancel", "audit lineage", "audit verify", "serve --model", "audit receipt"}
	if !slices.Equal(order, want) {
		t.Fatalf("guide commands %q, want %q", order, want)
	}
	pathFlags := []string{"--dir", "--data", "--genesis", "--pubkey", "--key", "--config", "-f", "--artifacts"}
	for _, args := range cmds {
		for i := 1; i < len(args); i++ {
			if args[0] == "verifier" && args[i-1] == "--artifacts" {
				continue // the verifier's --artifacts is the store's address
			}
			if slices.Contains(pathFlags, args[i-1]) && (!filepath.IsAbs(args[i]) || filepath.Clean(args[i]) != args[i]) {
				t.Errorf("fedtune %s: %s %q is not a clean absolute path", strings.Join(args[:2], " "), args[i-1], args[i])
			}
		}
	}
	run := func(ctx context.Context, what string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := cli.RunWith(ctx, cmds[what], &out, &errb); err != nil {
			t.Fatalf("fedtune %s: %v\n%s%s", strings.Join(cmds[what], " "), err, out.String(), errb.String())
		}
		t.Logf("fedtune %s:\n%s", what, out.String())
		return out.String()
	}

	// The verifier passed the first job's updates before its round
	// committed (the query shows its verdict on each).
	vid := n.ID(devnet.VerifierName)
	if out := run(ctx, "ledger query"); !strings.Contains(out, `"verified_by":"`+vid+`"`) || !strings.Contains(out, `"status":"committed"`) {
		t.Errorf("round 1 of %s does not show the verifier's pass:\n%s", n.JobName, out)
	}

	// Join a new trainer.
	id := strings.TrimSpace(run(ctx, "trainer init"))
	if out := run(ctx, "admin add-member"); !strings.Contains(out, "member "+id) {
		t.Fatalf("add-member printed %q, want member %s", out, id)
	}
	joinCtx, stopJoin := context.WithCancel(ctx)
	joined := make(chan error, 1)
	var joinLog syncBuffer
	go func() { joined <- cli.RunWith(joinCtx, cmds["trainer join"], &joinLog, &joinLog) }()
	waitJoined(t, ctx, n, id, joined, &joinLog)

	// Launch the second job; the new trainer trains its round.
	if out := run(ctx, "round launch"); !strings.Contains(out, "job "+n.NextJobName+" launched") {
		t.Fatalf("launch printed %q", out)
	}
	var status string
	for deadline := time.Now().Add(3 * time.Minute); ; {
		status = run(ctx, "round status")
		if strings.Contains(status, "job "+n.NextJobName+": "+coordinator.JobDone) || strings.Contains(status, "job "+n.NextJobName+": "+coordinator.JobFailed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not done in 3m:\n%s", n.NextJobName, status)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(status, ": "+coordinator.JobDone) || !strings.Contains(status, "committed") || !strings.Contains(status, id[:12]) {
		t.Fatalf("job %s did not commit a round with trainer %s:\n%s", n.NextJobName, id[:12], status)
	}

	// The guide's cancel names the second job: once it has ended there is
	// nothing to cancel, and the coordinator says so.
	var out, errb bytes.Buffer
	if err := cli.RunWith(ctx, cmds["round cancel"], &out, &errb); err == nil || !strings.Contains(err.Error(), "has ended") {
		t.Errorf("fedtune %s after the job ended: %v, want a refusal saying it has ended\n%s%s", strings.Join(cmds["round cancel"], " "), err, out.String(), errb.String())
	}

	// Audit: the model's lineage holds against the nodes' cosignatures,
	// and the whole chain, both jobs, verifies with every aggregation re-run.
	lineage := run(ctx, "audit lineage")
	if !strings.Contains(lineage, cmds["audit lineage"][2]) || !strings.Contains(lineage, "anchored: ") || !strings.Contains(lineage, "of 3 nodes") {
		t.Errorf("audit lineage does not show the model %s anchored in blocks the 3 nodes cosigned:\n%s", cmds["audit lineage"][2], lineage)
	}
	if out := run(ctx, "audit verify"); !strings.Contains(out, "OK: chain verified") || strings.Contains(out, " 0 re-aggregated") {
		t.Errorf("audit verify printed %q", out)
	}

	stopJoin()
	if err := <-joined; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("trainer join ended with %v", err)
	}
	stopUp()
	select {
	case err := <-upErr:
		if err != nil {
			t.Fatalf("UpKeep after cancel: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the kept network did not stop within 90s of its cancel")
	}
	if after := <-rest; !slices.Contains(after, "network stopped") {
		t.Errorf("display after the guide: %q, want it to end with \"network stopped\"", after)
	}
}

// waitJoined waits until the coordinator lists trainer id as joined.
func waitJoined(t *testing.T, ctx context.Context, n *devnet.Net, id string, joined <-chan error, log *syncBuffer) {
	t.Helper()
	opt, err := tlsid.DialOption(n.Keys["admin"], tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.Coordinator, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := coordinatorv1.NewCoordinatorClient(conn)
	for deadline := time.Now().Add(90 * time.Second); ; {
		if st, err := c.Status(ctx, &coordinatorv1.StatusRequest{}); err == nil && slices.Contains(st.Joined, id) {
			return
		}
		select {
		case err := <-joined:
			t.Fatalf("trainer join ended: %v\n%s", err, log.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("trainer %s did not join within 90s:\n%s", id[:12], log.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shellSplit splits a POSIX shell line into words: blanks separate them,
// single quotes quote, and # starts a comment.
func shellSplit(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	in, quoted := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted:
			if c == '\'' {
				quoted = false
			} else {
				w.WriteByte(c)
			}
		case c == '\'':
			quoted, in = true, true
		case c == ' ' || c == '\t':
			if in {
				words, in = append(words, w.String()), false
				w.Reset()
			}
		case c == '#' && !in:
			return words, nil
		case c == '"' || c == '\\' || c == '$' || c == '`':
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if in {
		words = append(words, w.String())
	}
	return words, nil
}
