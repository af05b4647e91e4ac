package adversarial

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/node"
)

// rulesDirBytes sums the sizes of the files under dir.
func rulesDirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // pebble removed a file under us
			}
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// rulesLedgerBytes returns the bytes of every ledger node's data dir.
func rulesLedgerBytes(t *testing.T, n *devnet.Net) []int64 {
	t.Helper()
	var out []int64
	for i := range n.LedgerGRPC {
		out = append(out, rulesDirBytes(t, filepath.Join(n.Dir, fmt.Sprintf("ledger-node-%d", i+1))))
	}
	return out
}

// rulesBigCommit is a RoundCommitted of about size bytes of envelope: the
// kind of tx the attacker flooded with (894 KB each).
func rulesBigCommit(size int) ledger.RoundCommitted {
	rc := ledger.RoundCommitted{JobID: "flood", Round: 1, ModelDigest: digestOf("flood model"), Strategy: "fedavg"}
	for i := 0; len(rc.Contributors)*228 < size; i++ {
		rc.Contributors = append(rc.Contributors, ledger.Contribution{Trainer: digestOf(fmt.Sprint("t", i)), UpdateDigest: digestOf(fmt.Sprint("u", i)), Weight: 1})
	}
	return rc
}

// rulesRaftConfig is the raft configuration as node i reports it.
func rulesRaftConfig(t *testing.T, ctx context.Context, n *devnet.Net, i int) string {
	t.Helper()
	st := nodeStatus(t, ctx, n, i)
	var s []string
	for _, p := range st.Peers {
		s = append(s, p.NodeId[:12]+"="+p.Suffrage+"@"+p.RaftAddress)
	}
	return strings.Join(s, " ")
}

// TestAttackRulesStrangerFlood: a non-member sends 24 txs of about 890 KB
// (and 24 more under max_tx_bytes) to a follower and to the leader. Every
// one is refused where it enters, before any proposal: nothing is
// replicated, the chain does not move and no node's pebble grows by more
// than a little (on the old code the leader proposed all of them and every
// node fsynced ~21 MB).
func TestAttackRulesStrangerFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	n := nw.Net
	before := waitSettled(t, ctx, n)
	sizes := rulesLedgerBytes(t, n)
	stranger, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leader, _ := findLeader(t, ctx, n)
	follower := (leader + 1) % len(n.LedgerGRPC)
	big, small := rulesBigCommit(890_000), rulesBigCommit(200_000)
	sent := 0
	for i := range 48 {
		body, target := big, follower
		if i%2 == 1 {
			target = leader
		}
		if i >= 24 {
			body = small
		}
		body.Round = uint64(i + 1)
		env, err := ledger.SignTx(stranger, n.ChainID, uint64(i+1), body)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && len(env) < 880_000 {
			t.Fatalf("flood tx is %d bytes, want about 890 KB", len(env))
		}
		c, err := n.Ledger(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := c.Submit(ctx, env)
		c.Close()
		if err != nil {
			t.Fatalf("flood tx %d: %v", i, err)
		}
		r := rs[0]
		want := "is not a member"
		if i < 24 {
			want = "policy max_tx_bytes"
		}
		if r.Status != ledgerv1.TxStatus_TX_STATUS_REJECTED || !strings.Contains(r.Reason, want) {
			t.Fatalf("flood tx %d (%d bytes) via node %d: %v %q, want REJECTED with %q", i, len(env), target, r.Status, r.Reason, want)
		}
		sent += len(env)
	}
	requireUnchanged(t, ctx, n, before)
	after := rulesLedgerBytes(t, n)
	for i := range after {
		if grew := after[i] - sizes[i]; grew > 1<<20 {
			t.Errorf("node %d: data dir grew by %d bytes (from %d to %d) after %d bytes of refused txs", i+1, grew, sizes[i], after[i], sent)
		}
	}
	t.Logf("sent %d bytes of stranger txs; data dirs before %v after %v", sent, sizes, after)
}

// TestAttackRulesRateLimit: a caller over its Submit rate (limits from the
// node config) gets ResourceExhausted with the limit named.
func TestAttackRulesRateLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgersWithLimits(t, ctx, "submit_tx_rate: 2\n  submit_tx_burst: 4")
	n := nw.Net
	before := waitSettled(t, ctx, n)
	stranger, _ := ledger.GenerateKey()
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var limited error
	for i := range 20 {
		env, err := ledger.SignTx(stranger, n.ChainID, uint64(i+1), ledger.RoundFailed{JobID: "x", Round: 1, Reason: "spam"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Submit(ctx, env); err != nil {
			limited = err
			break
		}
	}
	if status.Code(limited) != codes.ResourceExhausted || !strings.Contains(limited.Error(), "over its Submit rate of 2 txs/s") {
		t.Fatalf("20 submits at once: %v, want ResourceExhausted naming the rate", limited)
	}
	// A request larger than max_submit_bytes is refused whole.
	huge := make([][]byte, 20)
	for i := range huge {
		huge[i] = make([]byte, 1<<20)
	}
	if _, err := c.Submit(ctx, huge...); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max_submit_bytes") {
		t.Fatalf("20 MiB submit: %v", err)
	}
	requireUnchanged(t, ctx, n, before)
}

// TestAttackRulesMembership: a stranger (no key, or a non-admin key) cannot
// change raft membership: the Join/Remove RPCs change nothing and its
// NodeAdded is refused. An admin-signed NodeAdded adds a real fourth node
// as a non-voter, NodePromoted makes it a voter. Proposals from a
// non-voting node or with a time in 2262, applied to a real node's FSM,
// are refused and leave no block.
func TestAttackRulesMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four ledger nodes")
	}
	ctx := testContext(t, 4*time.Minute)
	nw := startLedgers(t, ctx)
	n := nw.Net
	before := waitSettled(t, ctx, n)
	leader, _ := findLeader(t, ctx, n)
	cfgBefore := rulesRaftConfig(t, ctx, n, leader)

	// The fourth node: a real node process of its own, started with only
	// a seed address; it waits to be added.
	dir := t.TempDir()
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "node-4.key")
	if err := ledger.SaveKey(keyPath, key); err != nil {
		t.Fatal(err)
	}
	id := ledger.KeyID(key.Public().(ed25519.PublicKey))
	if _, _, err := node.Init(filepath.Join(n.Dir, "genesis.yaml"), filepath.Join(dir, "data"), keyPath); err != nil {
		t.Fatal(err)
	}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &node.Config{DataDir: filepath.Join(dir, "data"), KeyFile: keyPath, RaftAddress: rl.Addr().String(),
		GRPCAddress: gl.Addr().String(), Join: n.LedgerGRPC[0],
		Raft: node.RaftConfig{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond, LeaderLeaseTimeout: 250 * time.Millisecond}}
	n4, err := node.New(cfg, node.Options{RaftListener: rl, GRPCListener: gl, Logger: n.Opts.Logger.With("node", 4)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n4.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("node 4: %v", err)
		}
	})
	p4 := node.PeerConfig{ID: id, RaftAddress: rl.Addr().String(), GRPCAddress: gl.Addr().String()}

	c, err := n.Ledger(ctx, (leader+1)%3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 1. The old unauthenticated RPCs.
	if err := c.Join(ctx, p4.ID, p4.RaftAddress, p4.GRPCAddress, true); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "admin-signed") {
		t.Fatalf("Join RPC: %v, want FailedPrecondition naming admin-signed txs", err)
	}
	if err := c.Remove(ctx, n.ID("node-1")); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Remove RPC: %v", err)
	}
	// 2. NodeAdded signed by a stranger and by a coordinator.
	body := ledger.NodeAdded{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), RaftAddress: p4.RaftAddress, GRPCAddress: p4.GRPCAddress}
	for _, tc := range []struct {
		key  ed25519.PrivateKey
		want string
	}{{key, "is not a member"}, {n.Keys["coordinator"], "NodeAdded needs role admin"}} {
		env, err := ledger.SignTx(tc.key, n.ChainID, 1000, body)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.SubmitWait(ctx, env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("NodeAdded without an admin key: %v, want %q", err, tc.want)
		}
	}
	time.Sleep(time.Second) // a reconcile round or three
	if got := rulesRaftConfig(t, ctx, n, leader); got != cfgBefore {
		t.Fatalf("raft configuration changed without an admin tx:\nbefore %s\nafter  %s", cfgBefore, got)
	}
	requireUnchanged(t, ctx, n, before)

	// 3. The admin adds the node (non-voter), then promotes it.
	admin := n.Keys["admin"]
	adminNonce := uint64(0)
	adminTx := func(b ledger.TxBody) {
		t.Helper()
		js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_NONCE, n.ID("admin"), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Sscan(string(js), &adminNonce); err != nil {
			t.Fatal(err)
		}
		env, err := ledger.SignTx(admin, n.ChainID, adminNonce+1, b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.SubmitWait(ctx, env); err != nil {
			t.Fatalf("%s: %v", b.TxType(), err)
		}
	}
	waitSuffrage := func(want string) {
		t.Helper()
		for {
			got := rulesRaftConfig(t, ctx, n, leader)
			if strings.Contains(got, id[:12]+"="+want+"@") {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("node 4 never became %s: %s", want, got)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	adminTx(body)
	waitSuffrage("nonvoter")
	f := n4.FSM()
	for {
		if r, ok := f.NodeMember(id); ok && !r.Voter {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("node 4 never applied its NodeAdded")
		case <-time.After(50 * time.Millisecond):
		}
	}

	// 4. Proposals the FSM of a real node must refuse: no block, no change.
	settled := waitSettled(t, ctx, n)
	h0, head0 := f.Head()
	coordTx, err := ledger.SignTx(n.Keys["coordinator"], n.ChainID, 1<<40, ledger.ModelRegistered{Digest: digestOf("m"), Name: "m", Licence: "l", Source: "s"})
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := ledger.GenerateKey()
	for _, tc := range []struct {
		name string
		p    ledger.Proposal
		want string
	}{
		{"from the non-voting node 4", ledger.Proposal{Proposer: id, Time: time.Now().UnixNano(), Txs: [][]byte{coordTx}}, "non-voting node"},
		{"from a stranger", ledger.Proposal{Proposer: ledger.KeyID(stranger.Public().(ed25519.PublicKey)), Time: time.Now().UnixNano(), Txs: [][]byte{coordTx}}, "not a ledger node of this chain"},
		{"from a voter, time in 2262", ledger.Proposal{Proposer: n.ID("node-1"), Time: time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), Txs: [][]byte{coordTx}}, "more than policy max_clock_skew 30s ahead"},
	} {
		res := f.ApplyProposal(tc.p)
		if !errors.Is(res.Err, fsm.ErrProposalRefused) || res.Block != nil || !strings.Contains(res.Err.Error(), tc.want) {
			t.Fatalf("proposal %s: %+v, want refused with %q", tc.name, res, tc.want)
		}
	}
	if h, head := f.Head(); h != h0 || head != head0 {
		t.Fatal("a refused proposal made a block")
	}
	requireUnchanged(t, ctx, n, settled)

	adminTx(ledger.NodePromoted{ID: id})
	waitSuffrage("voter")
	waitSettled(t, ctx, n)
}
