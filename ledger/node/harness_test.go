package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"gopkg.in/yaml.v3"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/freeport"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/ledger/node"
)

// helperEnv names the config file a re-executed test binary runs a node
// from (see TestMain).
const helperEnv = "FEDTUNE_LEDGER_NODE_HELPER_CONFIG"

// TestMain doubles as a ledger node process: with helperEnv set, the test
// binary runs one node from that config until SIGTERM (or SIGKILL), which
// lets the tests kill a real OS process without building the fedtune binary.
func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(runHelperNode(path))
	}
	os.Exit(m.Run())
}

func runHelperNode(path string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := node.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	opts := node.Options{Logger: log}
	if armFile := os.Getenv(faultEnv); armFile != "" {
		opts.FS = walFaultFS(ctx, armFile)
	}
	n, err := node.New(cfg, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := n.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// testRaft are raft timings fast enough for tests yet stable on two busy
// cores under -race.
func testRaft() node.RaftConfig {
	return node.RaftConfig{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		SnapshotThreshold:  1 << 20,
		SnapshotInterval:   time.Hour,
		TrailingLogs:       1,
	}
}

// cluster is a test ledger: a genesis with one admin and n node keys, and
// the nodes, each in this process or in a child process.
type cluster struct {
	t       testing.TB
	dir     string
	genesis string
	chainID string
	admin   ed25519.PrivateKey
	nonce   uint64
	nodes   []*tnode
	// logs passes in-process nodes' log lines to t until the test ends.
	logs *logGate
}

// tnode is one ledger node of a test cluster.
type tnode struct {
	c        *cluster
	idx      int
	id       string
	keyPath  string
	dataDir  string
	raftAddr string
	grpcAddr string
	subproc  bool
	// fs, if set, is the in-process node's pebble filesystem.
	fs vfs.FS
	// env is added to a child process's environment.
	env []string

	// in-process
	n      *node.Node
	cancel context.CancelFunc
	done   chan error
	// child process
	cmd *exec.Cmd
	log *os.File

	client *client.Client
}

// newCluster writes a genesis for n nodes and initializes their data
// directories. Nodes listed in subproc run as child processes.
func newCluster(t testing.TB, n int, subproc ...int) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), chainID: "test-chain", logs: &logGate{}}
	// Registered before stopAll, so it runs after it: the nodes' last
	// lines while stopping are still logged.
	t.Cleanup(c.logs.close)
	var err error
	if c.admin, err = ledger.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	isSub := map[int]bool{}
	for _, i := range subproc {
		isSub[i] = true
	}
	var nodeKeys []ed25519.PublicKey
	for i := range n {
		nd := c.addNode(i, isSub[i])
		k, _ := ledger.LoadKey(nd.keyPath)
		nodeKeys = append(nodeKeys, k.Public().(ed25519.PublicKey))
	}
	c.genesis = filepath.Join(c.dir, "genesis.yaml")
	var b strings.Builder
	fmt.Fprintf(&b, "chain_id: %s\nmembers:\n  - name: admin\n    role: admin\n    public_key: %s\nnodes:\n", c.chainID, hex.EncodeToString(c.admin.Public().(ed25519.PublicKey)))
	for i, k := range nodeKeys {
		fmt.Fprintf(&b, "  - name: node%d\n    public_key: %s\n", i, hex.EncodeToString(k))
	}
	fmt.Fprintf(&b, "policy:\n  max_block_txs: 64\n  block_interval: 5ms\n")
	if err := os.WriteFile(c.genesis, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.nodes {
		if _, _, err := node.Init(c.genesis, nd.dataDir, nd.keyPath); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.stopAll)
	return c
}

// addNode creates a key and addresses for node i (not yet started).
func (c *cluster) addNode(i int, subproc bool) *tnode {
	c.t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		c.t.Fatal(err)
	}
	nd := &tnode{
		c: c, idx: i, subproc: subproc,
		id:       ledger.KeyID(k.Public().(ed25519.PublicKey)),
		keyPath:  filepath.Join(c.dir, fmt.Sprintf("node%d.key", i)),
		dataDir:  filepath.Join(c.dir, fmt.Sprintf("node%d", i)),
		raftAddr: freeAddr(c.t),
		grpcAddr: freeAddr(c.t),
	}
	if err := ledger.SaveKey(nd.keyPath, k); err != nil {
		c.t.Fatal(err)
	}
	c.nodes = append(c.nodes, nd)
	return nd
}

// freeAddr returns a loopback address whose port was free a moment ago
// (see internal/freeport).
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// peers lists the first n nodes as config peers.
func (c *cluster) peers(n int) []node.PeerConfig {
	var ps []node.PeerConfig
	for _, nd := range c.nodes[:n] {
		ps = append(ps, node.PeerConfig{ID: nd.id, RaftAddress: nd.raftAddr, GRPCAddress: nd.grpcAddr})
	}
	return ps
}

// config returns the node's config: bootstrap with the first nPeers nodes,
// or join via joinAddr.
func (nd *tnode) config(nPeers int, joinAddr string) *node.Config {
	cfg := &node.Config{
		DataDir:     nd.dataDir,
		KeyFile:     nd.keyPath,
		RaftAddress: nd.raftAddr,
		GRPCAddress: nd.grpcAddr,
		Raft:        testRaft(),
	}
	if joinAddr != "" {
		cfg.Join = joinAddr
	} else {
		cfg.Bootstrap, cfg.Peers = true, nd.c.peers(nPeers)
	}
	return cfg
}

// start runs the node with cfg, in this process or as a child process.
func (nd *tnode) start(cfg *node.Config) {
	t := nd.c.t
	t.Helper()
	if nd.subproc {
		nd.startProcess(cfg)
	} else {
		rl, err := listenRetry(nd.raftAddr)
		if err != nil {
			t.Fatal(err)
		}
		gl, err := listenRetry(nd.grpcAddr)
		if err != nil {
			rl.Close()
			t.Fatal(err)
		}
		log := slog.New(slog.NewTextHandler(testWriter{t, nd.idx, nd.c.logs}, &slog.HandlerOptions{Level: slog.LevelWarn}))
		n, err := node.New(cfg, node.Options{Logger: log, RaftListener: rl, GRPCListener: gl, FS: nd.fs})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		nd.n, nd.cancel, nd.done = n, cancel, make(chan error, 1)
		go func() { nd.done <- n.Run(ctx) }()
	}
	if nd.client == nil {
		cl, err := client.Dial(context.Background(), nd.grpcAddr, nd.c.admin, nil)
		if err != nil {
			t.Fatal(err)
		}
		nd.client = cl
	}
}

// listenRetry listens on addr, retrying briefly while a previous owner of
// the port lets go of it.
func listenRetry(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, err
}

func (nd *tnode) startProcess(cfg *node.Config) {
	t := nd.c.t
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(nd.c.dir, fmt.Sprintf("node%d.yaml", nd.idx))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	nd.log, err = os.OpenFile(filepath.Join(nd.c.dir, fmt.Sprintf("node%d.log", nd.idx)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+path), nd.env...)
	cmd.Stdout, cmd.Stderr = nd.log, nd.log
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	nd.cmd = cmd
	nd.done = make(chan error, 1)
	go func() { nd.done <- cmd.Wait() }()
}

// stop stops the node cleanly (cancel, or SIGTERM for a child).
func (nd *tnode) stop() {
	t := nd.c.t
	switch {
	case nd.cmd != nil:
		_ = nd.cmd.Process.Signal(syscall.SIGTERM)
	case nd.cancel != nil:
		nd.cancel()
	default:
		return
	}
	select {
	case err := <-nd.done:
		if err != nil {
			t.Errorf("node %d stopped with: %v", nd.idx, err)
		}
	case <-time.After(30 * time.Second):
		if nd.cmd == nil {
			// An in-process node cannot be killed: it is left running, and
			// its log lines are dropped once the test ends.
			t.Errorf("node %d did not stop in 30s", nd.idx)
			break
		}
		// Kill the child, so it does not outlive the test.
		_ = nd.cmd.Process.Kill()
		select {
		case <-nd.done:
			t.Errorf("node %d did not stop in 30s: killed", nd.idx)
		case <-time.After(10 * time.Second):
			t.Errorf("node %d did not stop in 30s, nor exit within 10s of SIGKILL", nd.idx)
		}
	}
	nd.n, nd.cancel, nd.cmd = nil, nil, nil
	if nd.log != nil {
		nd.log.Close()
		nd.log = nil
	}
}

// kill sends SIGKILL to a child-process node.
func (nd *tnode) kill() {
	if nd.cmd == nil {
		nd.c.t.Fatal("kill: not a running child process")
	}
	_ = nd.cmd.Process.Kill()
	<-nd.done
	nd.cmd = nil
}

func (c *cluster) stopAll() {
	for _, nd := range c.nodes {
		if nd.cmd != nil {
			nd.kill()
		}
		nd.stop()
		if nd.client != nil {
			nd.client.Close()
			nd.client = nil
		}
	}
	if c.t.Failed() {
		for _, nd := range c.nodes {
			if data, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node%d.log", nd.idx))); err == nil {
				c.t.Logf("node%d.log:\n%s", nd.idx, tail(data, 4000))
			}
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// logGate is closed when a test ends: t.Logf after that panics the whole
// test binary, and a node that did not stop may still log.
type logGate struct {
	mu     sync.Mutex
	closed bool
}

func (g *logGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
}

// testWriter sends a node's log lines to t.Logf until its gate closes,
// then drops them.
type testWriter struct {
	t    testing.TB
	idx  int
	gate *logGate
}

func (w testWriter) Write(p []byte) (int, error) {
	w.gate.mu.Lock()
	defer w.gate.mu.Unlock()
	if !w.gate.closed {
		w.t.Logf("node%d: %s", w.idx, bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// waitFor polls cond until it returns nil or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// status returns the node's status with a short deadline.
func (nd *tnode) status() (*ledgerv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return nd.client.Status(ctx)
}

// leader waits for the live nodes to agree on a leader and returns it.
func (c *cluster) leader(live ...*tnode) *tnode {
	c.t.Helper()
	var found *tnode
	waitFor(c.t, 20*time.Second, "a leader", func() error {
		leaders := map[string]bool{}
		for _, nd := range live {
			st, err := nd.status()
			if err != nil {
				return err
			}
			if st.LeaderId == "" {
				return fmt.Errorf("node %d knows no leader", nd.idx)
			}
			leaders[st.LeaderId] = true
		}
		if len(leaders) != 1 {
			return fmt.Errorf("leaders disagree: %v", leaders)
		}
		for _, nd := range live {
			if leaders[nd.id] {
				found = nd
				return nil
			}
		}
		return errors.New("leader is not among the live nodes")
	})
	return found
}

// adminTx signs a MemberAdded for a fresh key with the admin's next nonce.
func (c *cluster) adminTx() ([]byte, ed25519.PrivateKey) {
	c.t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		c.t.Fatal(err)
	}
	c.nonce++
	env, err := ledger.SignTx(c.admin, c.chainID, c.nonce, ledger.MemberAdded{
		PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey)), Role: ledger.RoleTrainer, Name: fmt.Sprintf("trainer-%d", c.nonce),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return env, k
}

// adminSign signs body with the admin key and its next nonce.
func (c *cluster) adminSign(body ledger.TxBody) []byte {
	c.t.Helper()
	c.nonce++
	env, err := ledger.SignTx(c.admin, c.chainID, c.nonce, body)
	if err != nil {
		c.t.Fatal(err)
	}
	return env
}

// suffrage returns node id's suffrage in nd's raft configuration ("" if
// it is not in it).
func (nd *tnode) suffrage(id string) (string, error) {
	st, err := nd.status()
	if err != nil {
		return "", err
	}
	for _, p := range st.Peers {
		if p.NodeId == id {
			return p.Suffrage, nil
		}
	}
	return "", nil
}

// submit submits txs through nd and requires them all committed.
func (c *cluster) submit(nd *tnode, txs ...[]byte) []uint64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	heights := make([]uint64, len(txs))
	for i, tx := range txs {
		h, err := nd.client.SubmitWait(ctx, tx)
		if err != nil {
			c.t.Fatalf("submit via node %d: %v", nd.idx, err)
		}
		heights[i] = h
	}
	return heights
}

// waitHeight waits until every node in live has applied height h.
func (c *cluster) waitHeight(h uint64, live ...*tnode) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, fmt.Sprintf("height %d everywhere", h), func() error {
		for _, nd := range live {
			st, err := nd.status()
			if err != nil {
				return err
			}
			if st.Height < h {
				return fmt.Errorf("node %d at height %d", nd.idx, st.Height)
			}
		}
		return nil
	})
}

// chain reads blocks 0..h from nd as encoded bytes.
func (nd *tnode) chain(h uint64) [][]byte {
	t := nd.c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out [][]byte
	var mu sync.Mutex
	err := nd.client.Blocks(ctx, 0, false, func(vb *client.VerifiedBlock) error {
		mu.Lock()
		defer mu.Unlock()
		if vb.Block.Header.Height <= h {
			out = append(out, ledger.EncodeBlock(vb.Block))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("blocks of node %d: %v", nd.idx, err)
	}
	if uint64(len(out)) != h+1 {
		t.Fatalf("node %d has %d blocks, want %d", nd.idx, len(out), h+1)
	}
	return out
}

// sameChains requires nodes to hold byte-identical blocks 0..h.
func (c *cluster) sameChains(h uint64, nodes ...*tnode) {
	c.t.Helper()
	want := nodes[0].chain(h)
	for _, nd := range nodes[1:] {
		got := nd.chain(h)
		for i := range want {
			if !bytes.Equal(want[i], got[i]) {
				c.t.Fatalf("block %d differs between node %d and node %d", i, nodes[0].idx, nd.idx)
			}
		}
	}
}
