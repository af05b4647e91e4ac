package adversarial

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
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

// startLedgersWithLimits starts the three ledger nodes of a fresh devnet
// with limits (YAML lines under "limits:", joined by "\n  ") appended to
// every node's config. Rates low enough that a slow, loaded machine still
// outruns them keep the rate-limit attacks deterministic.
func startLedgersWithLimits(t *testing.T, ctx context.Context, limits string) *devnet.Network {
	t.Helper()
	n := prepareNet(t, ctx, devnet.Options{})
	for i := 1; i <= 3; i++ {
		p := filepath.Join(n.Dir, fmt.Sprintf("node-%d.yaml", i))
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString("limits:\n  " + limits + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
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
		st := nodeStatus(t, ctx, n, i)
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

// digestOf is the SHA-256 digest (64 lowercase hex) of s: a stand-in for
// a model, dataset or update digest.
func digestOf(s string) string { return artifact.DigestOf([]byte(s)) }

// newKey is a fresh ed25519 key: a stranger's, unless a test makes it a
// member.
func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// nodeStatus is ledger node i's Status.
func nodeStatus(t *testing.T, ctx context.Context, n *devnet.Net, i int) *ledgerv1.StatusResponse {
	t.Helper()
	c, err := n.Ledger(ctx, i)
	if err != nil {
		t.Fatalf("dial ledger %d: %v", i, err)
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("status of ledger %d: %v", i, err)
	}
	return st
}

// raftTerms reads every ledger node's raft term.
func raftTerms(t *testing.T, ctx context.Context, n *devnet.Net) []uint64 {
	t.Helper()
	var terms []uint64
	for i := range n.LedgerGRPC {
		terms = append(terms, nodeStatus(t, ctx, n, i).Term)
	}
	return terms
}

// findLeader returns the index and Status of the node that reports itself
// leader, waiting for one.
func findLeader(t *testing.T, ctx context.Context, n *devnet.Net) (int, *ledgerv1.StatusResponse) {
	t.Helper()
	for {
		for i := range n.LedgerGRPC {
			if st := nodeStatus(t, ctx, n, i); st.State == "Leader" {
				return i, st
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("no leader")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// storeFiles lists every file of the coordinator's artifact store (path
// and size, sorted, its LOCK file left out), so an attack can show it
// added none.
func storeFiles(t *testing.T, n *devnet.Net) []string {
	t.Helper()
	root := filepath.Join(n.Dir, "coordinator", "artifacts")
	if _, err := os.Stat(filepath.Join(root, "LOCK")); err != nil {
		t.Fatalf("no artifact store at %s (is that where the coordinator keeps it?): %v", root, err)
	}
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "LOCK" {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, fmt.Sprintf("%s %d", rel, fi.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// requireStore fails the test unless the artifact store holds the files
// of before, within wait (pruning of abandoned uploads takes a while).
func requireStore(t *testing.T, n *devnet.Net, before []string, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		after := storeFiles(t, n)
		if slices.Equal(before, after) {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("the attack changed the artifact store:\nnew  %v\ngone %v", filesMissing(after, before), filesMissing(before, after))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// filesMissing returns the entries of want that have lacks.
func filesMissing(want, have []string) []string {
	var out []string
	for _, f := range want {
		if !slices.Contains(have, f) {
			out = append(out, f)
		}
	}
	return out
}

// jobWithEval returns the job YAML with another name and eval.data.
func jobWithEval(t *testing.T, job []byte, name, data string) []byte {
	t.Helper()
	var out []string
	inEval := false
	for _, line := range strings.Split(string(job), "\n") {
		switch {
		case strings.HasPrefix(line, "name:"):
			line = "name: " + name
		case strings.HasPrefix(line, "eval:"):
			inEval = true
		case inEval && strings.HasPrefix(strings.TrimSpace(line), "data:"):
			line = line[:strings.Index(line, "data:")] + fmt.Sprintf("data: %q", data)
			inEval = false
		case len(line) > 0 && line[0] != ' ':
			inEval = false
		}
		out = append(out, line)
	}
	y := []byte(strings.Join(out, "\n"))
	j, err := coordinator.ParseJob("attack.yaml", y)
	if err != nil || j.Eval.Data != data || j.Name != name {
		t.Fatalf("rewritten job: %v (%+v)", err, j)
	}
	return y
}

// submitters returns a Signer on c for each of the network's keys and a
// must that submits body as who and fails the test if it is refused.
func submitters(t *testing.T, ctx context.Context, nw *devnet.Network, c *client.Client) (map[string]*client.Signer, func(who string, body ledger.TxBody)) {
	sig := map[string]*client.Signer{}
	for name, key := range nw.Keys {
		sig[name] = client.NewSigner(c, key)
	}
	return sig, func(who string, body ledger.TxBody) {
		t.Helper()
		if _, err := sig[who].Submit(ctx, body); err != nil {
			t.Fatalf("%s by %s: %v", body.TxType(), who, err)
		}
	}
}
