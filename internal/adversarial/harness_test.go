package adversarial

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/devnet"
)

type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// prepareNet makes an in-process devnet (keys, genesis, configs, a barely
// pre-trained base model) in a temporary folder, ready to start.
func prepareNet(t *testing.T, ctx context.Context, o devnet.Options) *devnet.Net {
	t.Helper()
	o.Dir, o.Repo, o.InProcess = t.TempDir(), "../..", true
	o.Logger = slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	o.Out = tlog{t}
	if o.PretrainSteps == 0 {
		o.PretrainSteps = 2
	}
	n, err := devnet.Prepare(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startLedgers prepares a devnet and starts only its three ledger nodes; they
// are stopped when the test ends.
func startLedgers(t *testing.T, ctx context.Context) *devnet.Network {
	t.Helper()
	n := prepareNet(t, ctx, devnet.Options{})
	nw, err := n.StartLedgers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	return nw
}

// testContext is a context bounded so that a stuck attack fails instead of
// hanging the suite.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// chainState is what every ledger node reports of its chain: a test takes one
// before an attack and compares it after.
type chainState []string

// snapshotChain reads height and head hash from every ledger node.
func snapshotChain(t *testing.T, ctx context.Context, n *devnet.Net) chainState {
	t.Helper()
	var s chainState
	for i := range n.LedgerGRPC {
		c, err := n.Ledger(ctx, i)
		if err != nil {
			t.Fatalf("dial ledger %d: %v", i, err)
		}
		st, err := c.Status(ctx)
		c.Close()
		if err != nil {
			t.Fatalf("status of ledger %d: %v", i, err)
		}
		s = append(s, fmt.Sprintf("node %d: height %d head %x", i, st.Height, st.LastBlockHash))
	}
	return s
}

// waitSettled waits until every node reports the same height, so that a
// snapshot taken next is not racing a block still being replicated.
func waitSettled(t *testing.T, ctx context.Context, n *devnet.Net) chainState {
	t.Helper()
	for {
		s := snapshotChain(t, ctx, n)
		same := true
		for i := range s {
			if s[i][len("node 0: "):] != s[0][len("node 0: "):] {
				same = false
			}
		}
		if same {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ledger nodes never agreed: %v", s)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// requireUnchanged fails the test if the chain moved since before.
func requireUnchanged(t *testing.T, ctx context.Context, n *devnet.Net, before chainState) {
	t.Helper()
	after := waitSettled(t, ctx, n)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("the attack changed the chain:\nbefore %v\nafter  %v", before, after)
	}
}
