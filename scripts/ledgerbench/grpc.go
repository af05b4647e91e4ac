package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/ledger/node"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// runGRPC sets up a 3-node fedtune ledger cluster on loopback with the
// fedtune binary itself (keygen, ledger init, ledger start), then has
// concurrent clients, each its own genesis member, submit signed
// DatasetRegistered txs through the nodes' gRPC Submit (spread over the three
// nodes; followers forward to the leader) and wait for each to commit.
func runGRPC(args []string) error {
	fs := flag.NewFlagSet("grpc", flag.ContinueOnError)
	bin := fs.String("fedtune", "bin/fedtune", "the fedtune binary")
	dir := fs.String("dir", "", "directory for keys, genesis and node data (default: a new temp dir, removed after)")
	concs := fs.String("conc", "1,16,256", "comma-separated numbers of concurrent clients")
	duration := fs.Duration("duration", 10*time.Second, "measured time per level")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before each level")
	interval := fs.Duration("block-interval", 50*time.Millisecond, "genesis policy block_interval: how long a leader with a proposal in flight waits to fill the next block (50ms is the genesis default)")
	presignRate := fs.Int("presign-rate", 8000, "sign duration x this many txs per second (over all clients) before each level, outside the measured window; 0: sign every tx inline, inside the window")
	cpuprofile := fs.String("cpuprofile", "", "run the three nodes in this process (node.New/Run) and write a CPU profile of the measured runs here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	levels, err := parseLevels(*concs)
	if err != nil {
		return err
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "ledgerbench-grpc-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	if err := os.MkdirAll(filepath.Join(*dir, "keys"), 0o700); err != nil {
		return err
	}
	c := &grpcCluster{bin: *bin, dir: *dir, inProcess: *cpuprofile != ""}
	defer c.stop()
	maxConc := slices.Max(levels)
	if err := c.setup(maxConc, *interval); err != nil {
		return err
	}
	if err := c.start(); err != nil {
		return err
	}
	clients, err := c.waitReady(60 * time.Second)
	if err != nil {
		return err
	}
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	progress("fedtune ledger cluster of 3 nodes up (block_interval %s); %d client identities", *interval, maxConc)

	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	nonces := make([]uint64, maxConc)
	sizeShown := false
	for _, conc := range levels {
		if *warmup > 0 {
			if _, _, _, err := driveGRPC(clients, c.chainID, c.clientKeys[:conc], nonces, nil, *warmup); err != nil {
				return err
			}
		}
		// Sign the level's txs before it starts: the clients share the
		// machine with the nodes, and signing inside the measured window
		// would charge the load generator's ed25519 work to the ledger
		// (etcdbench's clients put a ready-made value). Every tx is still
		// signed, submitted and awaited the same way; a client that runs
		// out of presigned txs signs the next ones inline.
		pre := presign(c.chainID, c.clientKeys[:conc], nonces, presignCount(*presignRate, *duration, conc))
		runtime.GC()
		h0, err := height(clients[0])
		if err != nil {
			return err
		}
		m0 := c.applyMetrics()
		lats, elapsed, size, err := driveGRPC(clients, c.chainID, c.clientKeys[:conc], nonces, pre, *duration)
		if err != nil {
			return err
		}
		if !sizeShown {
			fmt.Printf("TXSIZE bytes=%d\n", size)
			sizeShown = true
		}
		h1, err := height(clients[0])
		if err != nil {
			return err
		}
		m1 := c.applyMetrics()
		result("fedtune", conc, lats, elapsed)
		if h1 > h0 {
			line := fmt.Sprintf("BREAKDOWN system=fedtune conc=%d blocks=%d txs_per_block=%.1f", conc, h1-h0, float64(len(lats))/float64(h1-h0))
			if m0.ok && m1.ok && m1.count > m0.count {
				// On the leader, raft.Apply of a block to its result:
				// replication, fsyncs and the FSM (signature checks included).
				line += fmt.Sprintf(" leader_raft_apply_ms_avg=%.3f", (m1.sum-m0.sum)/(m1.count-m0.count)*1e3)
			}
			fmt.Println(line)
		}
	}
	return nil
}

type grpcCluster struct {
	bin, dir   string
	inProcess  bool
	cancel     context.CancelFunc
	runErrs    chan error
	chainID    string
	clientKeys []ed25519.PrivateKey
	configs    []string
	grpcAddrs  []string
	metrics    []string
	procs      []*exec.Cmd
}

// fedtune runs the fedtune binary and returns its stdout.
func (c *grpcCluster) fedtune(args ...string) (string, error) {
	cmd := exec.Command(c.bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("fedtune %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (c *grpcCluster) setup(nClients int, interval time.Duration) error {
	c.chainID = "fedtune-bench"
	keyDir := filepath.Join(c.dir, "keys")
	// Node and admin keys through the CLI.
	var nodeIDs, nodePubs []string
	for i := 1; i <= 3; i++ {
		path := filepath.Join(keyDir, fmt.Sprintf("node%d.key", i))
		out, err := c.fedtune("keygen", "-o", path)
		if err != nil {
			return err
		}
		nodeIDs = append(nodeIDs, strings.TrimSpace(strings.SplitN(out, "\n", 2)[0]))
		pub, err := ledger.LoadPublicKey(strings.TrimSuffix(path, ".key") + ".pub")
		if err != nil {
			return err
		}
		nodePubs = append(nodePubs, hex.EncodeToString(pub))
	}
	if _, err := c.fedtune("keygen", "-o", filepath.Join(keyDir, "admin.key")); err != nil {
		return err
	}
	adminPub, err := ledger.LoadPublicKey(filepath.Join(keyDir, "admin.pub"))
	if err != nil {
		return err
	}
	// One trainer identity per client (nonces are per signer and must arrive
	// in order), generated here: hundreds of keygen runs would only be slow.
	var g strings.Builder
	fmt.Fprintf(&g, "chain_id: %s\nmembers:\n", c.chainID)
	fmt.Fprintf(&g, "  - name: admin\n    role: admin\n    public_key: %x\n", []byte(adminPub))
	for i := range nClients {
		k, err := ledger.GenerateKey()
		if err != nil {
			return err
		}
		c.clientKeys = append(c.clientKeys, k)
		fmt.Fprintf(&g, "  - name: client-%04d\n    role: trainer\n    public_key: %x\n", i, []byte(k.Public().(ed25519.PublicKey)))
	}
	fmt.Fprintf(&g, "nodes:\n")
	for i, p := range nodePubs {
		fmt.Fprintf(&g, "  - name: node-%d\n    public_key: %s\n", i+1, p)
	}
	fmt.Fprintf(&g, "policy:\n  max_block_txs: 1000\n  max_block_bytes: 8388608\n  max_tx_bytes: 262144\n  block_interval: %s\n  checkpoint_quorum: 2\n", interval)
	genesis := filepath.Join(c.dir, "genesis.yaml")
	if err := os.WriteFile(genesis, []byte(g.String()), 0o644); err != nil {
		return err
	}

	ports, err := listenPorts(9)
	if err != nil {
		return err
	}
	var peers strings.Builder
	for i := range 3 {
		fmt.Fprintf(&peers, "  - id: %s\n    raft_address: 127.0.0.1:%d\n    grpc_address: 127.0.0.1:%d\n", nodeIDs[i], ports[i], ports[3+i])
	}
	for i := range 3 {
		data := filepath.Join(c.dir, fmt.Sprintf("node%d", i+1))
		key := filepath.Join(keyDir, fmt.Sprintf("node%d.key", i+1))
		if _, err := c.fedtune("ledger", "init", "--genesis", genesis, "--data", data, "--key", key); err != nil {
			return err
		}
		cfg := fmt.Sprintf("data_dir: %s\nkey_file: %s\nraft_address: 127.0.0.1:%d\ngrpc_address: 127.0.0.1:%d\nmetrics_address: 127.0.0.1:%d\nbootstrap: true\npeers:\n%s",
			data, key, ports[i], ports[3+i], ports[6+i], peers.String())
		path := filepath.Join(c.dir, fmt.Sprintf("node%d.yaml", i+1))
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return err
		}
		c.configs = append(c.configs, path)
		c.grpcAddrs = append(c.grpcAddrs, fmt.Sprintf("127.0.0.1:%d", ports[3+i]))
		c.metrics = append(c.metrics, fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[6+i]))
	}
	return nil
}

func (c *grpcCluster) start() error {
	if c.inProcess {
		return c.startInProcess()
	}
	for i, cfg := range c.configs {
		logf, err := os.Create(filepath.Join(c.dir, fmt.Sprintf("node%d.log", i+1)))
		if err != nil {
			return err
		}
		cmd := exec.Command(c.bin, "ledger", "start", "--config", cfg)
		cmd.Stdout, cmd.Stderr = logf, logf
		setParentDeathSignal(cmd)
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start node %d: %w", i+1, err)
		}
		logf.Close()
		c.procs = append(c.procs, cmd)
	}
	return nil
}

// startInProcess runs the three nodes in this process, so that one CPU
// profile covers the whole cluster.
func (c *grpcCluster) startInProcess() error {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.runErrs = make(chan error, len(c.configs))
	for i, path := range c.configs {
		cfg, err := node.LoadConfig(path)
		if err != nil {
			return err
		}
		n, err := node.New(cfg, node.Options{})
		if err != nil {
			return fmt.Errorf("node %d: %w", i+1, err)
		}
		go func() { c.runErrs <- n.Run(ctx) }()
	}
	return nil
}

func (c *grpcCluster) stop() {
	if c.cancel != nil {
		c.cancel()
		for range c.configs {
			select {
			case <-c.runErrs:
			case <-time.After(10 * time.Second):
			}
		}
		c.cancel = nil
	}
	for _, p := range c.procs {
		_ = p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range c.procs {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	c.procs = nil
}

// waitReady dials every node and waits until all three see one leader.
func (c *grpcCluster) waitReady(d time.Duration) ([]*client.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var clients []*client.Client
	for i, a := range c.grpcAddrs {
		// A member's key as the TLS identity: nodes limit callers whose key
		// is no member together (limits.non_member_tx_rate).
		key := c.clientKeys[i%len(c.clientKeys)]
		cl, err := client.Dial(ctx, a, key, nil)
		if err != nil {
			return nil, err
		}
		clients = append(clients, cl)
	}
	var last error
	for ctx.Err() == nil {
		leaders := map[string]bool{}
		last = nil
		for i, cl := range clients {
			sctx, scancel := context.WithTimeout(ctx, time.Second)
			st, err := cl.Status(sctx)
			scancel()
			if err != nil {
				last = fmt.Errorf("node %d: %w", i+1, err)
				break
			}
			leaders[st.LeaderId] = true
		}
		if last == nil && len(leaders) == 1 && !leaders[""] {
			return clients, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range c.configs {
		if b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node%d.log", i+1))); err == nil {
			progress("node%d.log (tail):\n%s", i+1, tail(string(b), 1500))
		}
	}
	return nil, fmt.Errorf("cluster not ready after %s: %v", d, last)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func height(c *client.Client) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return 0, err
	}
	return st.Height, nil
}

// driveGRPC has one client per key submit signed txs round-robin to the
// nodes for d, each waiting for its tx to commit. Client ci first uses the
// txs of pre[ci] (presign's, for its next nonces), then signs inline. It
// returns the latencies, the time taken and the size of a tx envelope.
func driveGRPC(clients []*client.Client, chainID string, keys []ed25519.PrivateKey, nonces []uint64, pre [][][]byte, d time.Duration) ([]time.Duration, time.Duration, int, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []time.Duration
		size     int
		firstErr error
	)
	ctx := context.Background()
	start := time.Now()
	stop := start.Add(d)
	for ci, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[ci%len(clients)]
			var lats []time.Duration
			var err error
			var env []byte
			var mine [][]byte
			if ci < len(pre) {
				mine = pre[ci]
			}
			for k := 0; time.Now().Before(stop); k++ {
				nonces[ci]++
				if k < len(mine) {
					env = mine[k]
				} else if env, err = benchTx(key, chainID, ci, nonces[ci]); err != nil {
					break
				}
				t0 := time.Now()
				sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err = submitCommitted(sctx, cl, env)
				cancel()
				if err != nil {
					err = fmt.Errorf("client %d nonce %d: %w", ci, nonces[ci], err)
					break
				}
				lats = append(lats, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lats...)
			size = max(size, len(env))
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, 0, 0, firstErr
	}
	if len(all) == 0 {
		return nil, 0, 0, errors.New("no tx committed")
	}
	return all, time.Since(start), size, nil
}

// benchTx is client ci's signed DatasetRegistered tx with nonce nonce.
func benchTx(key ed25519.PrivateKey, chainID string, ci int, nonce uint64) ([]byte, error) {
	var seed [16]byte
	binary.BigEndian.PutUint64(seed[:], uint64(ci))
	binary.BigEndian.PutUint64(seed[8:], nonce)
	digest := sha256.Sum256(seed[:])
	return ledger.SignTx(key, chainID, nonce, ledger.DatasetRegistered{
		Digest: hex.EncodeToString(digest[:]), Name: fmt.Sprintf("bench-%d-%d", ci, nonce),
		Licence: "CC-BY-4.0", Source: "https://example.org/ledgerbench", Samples: nonce, Root: hex.EncodeToString(digest[:]),
	})
}

// presignCount is how many txs each of conc clients presigns for a level of
// duration d at up to rate txs per second in all.
func presignCount(rate int, d time.Duration, conc int) int {
	if rate <= 0 || conc <= 0 {
		return 0
	}
	return int(math.Ceil(float64(rate) * d.Seconds() / float64(conc)))
}

// presign signs, on every core, count txs per client: those benchTx gives
// for its nonces after nonces[ci], in order (the txs driveGRPC would sign).
func presign(chainID string, keys []ed25519.PrivateKey, nonces []uint64, count int) [][][]byte {
	if count <= 0 {
		return nil
	}
	out := make([][][]byte, len(keys))
	for ci := range out {
		out[ci] = make([][]byte, count)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				j := int(next.Add(1) - 1)
				if j >= len(keys)*count {
					return
				}
				ci, k := j/count, j%count
				env, err := benchTx(keys[ci], chainID, ci, nonces[ci]+uint64(k)+1)
				if err != nil {
					// Left nil: driveGRPC stops using the presigned txs
					// there and signs inline, reporting the error.
					continue
				}
				out[ci][k] = env
			}
		})
	}
	wg.Wait()
	for ci, txs := range out {
		for k, env := range txs {
			if env == nil {
				out[ci] = txs[:k]
				break
			}
		}
	}
	return out
}

type applyStats struct {
	sum, count float64
	ok         bool
}

// applyMetrics sums the nodes' fedtune_ledger_apply_seconds histograms
// (Prometheus text format from each node's metrics address): the time from
// raft.Apply of a block proposal to its result, observed on the leader.
func (c *grpcCluster) applyMetrics() applyStats {
	var st applyStats
	hc := http.Client{Timeout: 2 * time.Second}
	for _, u := range c.metrics {
		resp, err := hc.Get(u)
		if err != nil {
			return applyStats{}
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 {
				continue
			}
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				continue
			}
			switch f[0] {
			case "fedtune_ledger_apply_seconds_sum":
				st.sum += v
				st.ok = true
			case "fedtune_ledger_apply_seconds_count":
				st.count += v
			}
		}
		resp.Body.Close()
	}
	return st
}

// submitCommitted submits env until the node answers committed (or
// rejected, an error), like etcd's Put returning once the quorum has the
// write. Unlike client.Client.SubmitWait it does not then fetch the tx's
// inclusion proof: the benchmark measures the ledger's commit latency.
func submitCommitted(ctx context.Context, cl *client.Client, env []byte) error {
	for {
		rs, err := cl.Submit(ctx, env)
		switch {
		case err == nil && rs[0].Status == ledgerv1.TxStatus_TX_STATUS_COMMITTED:
			return nil
		case err == nil && rs[0].Status == ledgerv1.TxStatus_TX_STATUS_REJECTED:
			return client.Rejection(rs[0])
		case err != nil && status.Code(err) != codes.Unavailable:
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
