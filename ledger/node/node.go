package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// Errors returned by the node.
var (
	// ErrNotInitialized is returned by New for a data directory that Init
	// has not prepared.
	ErrNotInitialized = errors.New("ledger node: data directory not initialized (run \"fedtune ledger init\")")
	// ErrNoLeader is returned when no raft leader is known in time.
	ErrNoLeader = errors.New("ledger node: no leader")
	// ErrStopped is returned for work cut short by the node stopping.
	ErrStopped = errors.New("ledger node: stopped")
)

// blockCacheSize is the node's pebble block cache. The FSM's point reads
// (tx index, nonces, existence checks) go through the index, filter and
// data blocks of every level; with pebblestore's 32 MiB default, flushes
// and compactions of the raft log's bytes kept evicting them, and under
// ledgerbench load nearly half of the FSM's read time went to re-reading
// blocks from files (128 MiB: under a sixth).
const blockCacheSize = 128 << 20

// genesisName is the genesis file's name inside a data directory.
const genesisName = "genesis.yaml"

// Options hold what is injected into a node rather than configured.
type Options struct {
	// Logger receives the node's logs (raft's included); nil discards.
	Logger *slog.Logger
	// RaftListener, GRPCListener and MetricsListener replace listening on
	// the configured addresses (tests pass loopback listeners on port 0).
	// The node closes them.
	RaftListener    net.Listener
	GRPCListener    net.Listener
	MetricsListener net.Listener
	// Dialer dials gRPC peers; nil uses net.Dialer.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
	// ApplyTimeout bounds one raft.Apply; zero means 30s.
	ApplyTimeout time.Duration
	// FS is the filesystem the pebble database lives on; nil means the
	// operating system's. Tests wrap it to inject disk faults.
	FS vfs.FS
}

// Node is one running ledger node. Create it with New and run it with Run.
type Node struct {
	cfg     Config
	opts    Options
	log     *slog.Logger
	key     ed25519.PrivateKey
	id      string
	genesis *ledger.Genesis
	// genesisNodes are the IDs of the genesis file's nodes (see isNode).
	genesisNodes map[string]bool
	// selfSeq is the seq of this node's signed directory entry: its start
	// time in Unix nanoseconds, so that a restarted node's entry wins.
	selfSeq uint64

	db        *pebblestore.DB
	fsm       *fsm.FSM
	snaps     raft.SnapshotStore
	transport *raft.NetworkTransport
	// stream is the transport's TLS stream layer (inbound raft connections).
	stream  *tlsStreamLayer
	raft    *raft.Raft
	peers   *peerDir
	metrics *metrics
	limits  *limiters

	grpcLn    net.Listener
	metricsLn net.Listener
	grpcSrv   *grpc.Server

	queue    chan *pendingTx
	inflight chan struct{}
	done     chan struct{} // closed when Run starts stopping

	mu          sync.Mutex
	newBlock    chan struct{} // closed and replaced after each applied block
	checkpoints map[uint64]client.Checkpoint
	conns       map[string]*grpc.ClientConn      // by connKey(addr, id)
	apis        map[string]ledgerv1.LedgerClient // one client per conn, so that equal means same peer
	waiting     map[[32]byte][]*pendingTx        // txs queued or in flight, by hash

	fwd     forwarder   // coalesces Submit calls forwarded to the leader
	gathers gatherCache // GetBlock's cosignature gathers, by height
}

// Init prepares dataDir for a node of the chain described by genesisPath,
// checking that the genesis file and the node key load. It copies the
// genesis file into dataDir; initializing again with the same genesis is a
// no-op, with a different one an error. It returns the node ID.
func Init(genesisPath, dataDir, keyPath string) (nodeID string, g *ledger.Genesis, err error) {
	g, err = ledger.LoadGenesis(genesisPath)
	if err != nil {
		return "", nil, err
	}
	key, err := ledger.LoadKey(keyPath)
	if err != nil {
		return "", nil, err
	}
	data, err := os.ReadFile(genesisPath)
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", nil, fmt.Errorf("init %s: %w", dataDir, err)
	}
	dst := filepath.Join(dataDir, genesisName)
	if old, err := os.ReadFile(dst); err == nil {
		if string(old) != string(data) {
			return "", nil, fmt.Errorf("init %s: already initialized with a different genesis (%s)", dataDir, dst)
		}
	} else if !os.IsNotExist(err) {
		return "", nil, err
	} else if err := atomicfile.Write(dst, data, 0o644); err != nil {
		return "", nil, err
	}
	return ledger.KeyID(key.Public().(ed25519.PublicKey)), g, nil
}

// New opens a node's key, genesis, pebble database, snapshot store and
// listeners, ready for Run. On error everything opened is closed again.
// Call Run exactly once: it owns what New opened and closes it when it
// returns.
func New(cfg *Config, opts Options) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.ApplyTimeout == 0 {
		opts.ApplyTimeout = 30 * time.Second
	}
	n := &Node{
		cfg:         *cfg,
		opts:        opts,
		metrics:     newMetrics(),
		done:        make(chan struct{}),
		newBlock:    make(chan struct{}),
		checkpoints: map[uint64]client.Checkpoint{},
		conns:       map[string]*grpc.ClientConn{},
		apis:        map[string]ledgerv1.LedgerClient{},
		waiting:     map[[32]byte][]*pendingTx{},
	}
	n.cfg.Raft = cfg.Raft.withDefaults()
	n.cfg.Limits = cfg.Limits.withDefaults()
	n.limits = newLimiters(n.cfg.Limits)
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
			for _, ln := range []net.Listener{opts.RaftListener, opts.GRPCListener, opts.MetricsListener} {
				if ln != nil {
					ln.Close()
				}
			}
		}
	}()

	if n.key, err = ledger.LoadKey(cfg.KeyFile); err != nil {
		return nil, err
	}
	n.id = ledger.KeyID(n.key.Public().(ed25519.PublicKey))
	if cfg.NodeID != "" && cfg.NodeID != n.id {
		return nil, fmt.Errorf("%w: node_id %s does not match key %s (ID %s)", ErrConfig, cfg.NodeID, cfg.KeyFile, n.id)
	}
	n.log = log.With("node", short(n.id))
	gpath := filepath.Join(cfg.DataDir, genesisName)
	if _, err := os.Stat(gpath); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotInitialized, cfg.DataDir, err)
	}
	if n.genesis, err = ledger.LoadGenesis(gpath); err != nil {
		return nil, err
	}
	if len(n.genesis.Nodes) == 0 && !cfg.AllowUnpinned {
		return nil, fmt.Errorf("%w: the genesis of chain %s lists no nodes, so raft and the node-to-node RPCs would accept any key as a ledger node: list the node keys under \"nodes:\" in the genesis file, or set allow_unpinned: true in the node config (development only)", ErrConfig, n.genesis.ChainID)
	}
	n.genesisNodes = make(map[string]bool, len(n.genesis.Nodes))
	for _, g := range n.genesis.Nodes {
		n.genesisNodes[ledger.KeyID(g.Key)] = true
	}
	if n.db, err = pebblestore.Open(filepath.Join(cfg.DataDir, "pebble"), pebblestore.Options{Logger: n.log.With("component", "pebble"), FS: opts.FS, CacheSize: blockCacheSize}); err != nil {
		return nil, err
	}
	closers = append(closers, n.db.Close)
	n.fsm, err = fsm.New(n.db.State(), n.genesis, fsm.Options{
		Logger:  n.log.With("component", "fsm"),
		OnBlock: n.onBlock,
		// The raft log shares the state's WAL and is synced before each
		// entry is applied: a block need not pay a second fsync.
		DeferSync: true,
	})
	if err != nil {
		return nil, err
	}
	// isNode may consult the FSM: from here on it can be called.
	if len(n.genesis.Nodes) == 0 {
		n.log.Warn("the genesis file lists no nodes and allow_unpinned is set: raft and the node-to-node RPCs accept any key as a ledger node (development only)", "chain", n.genesis.ChainID)
	} else if !n.isNode(n.id) {
		n.log.Warn("this node's key is not a ledger node of the chain: other nodes will refuse its raft and node-to-node connections", "id", n.id, "chain", n.genesis.ChainID)
	}
	if n.peers, err = loadPeerDir(filepath.Join(cfg.DataDir, "peers.json"), n.genesis.ChainID, n.isNode, cfg.Peers); err != nil {
		return nil, err
	}
	// Newer than any entry this node signed before, even if the clock went
	// back: peers keep the entry with the highest seq.
	n.selfSeq = max(uint64(time.Now().UnixNano()), n.peers.seq(n.id)+1)
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, n.cfg.Raft.RetainSnapshots, hclogFor(n.log, "raft-snapshot"))
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}

	rl := opts.RaftListener
	if rl == nil {
		if rl, err = net.Listen("tcp", cfg.RaftAddress); err != nil {
			return nil, fmt.Errorf("raft listener: %w", err)
		}
	}
	stream, err := n.newTLSStreamLayer(rl)
	if err != nil {
		rl.Close()
		return nil, err
	}
	n.stream = stream
	n.transport = raft.NewNetworkTransportWithLogger(stream, 3, 10*time.Second, hclogFor(n.log, "raft-net"))
	closers = append(closers, n.transport.Close)
	if n.grpcLn = opts.GRPCListener; n.grpcLn == nil {
		if n.grpcLn, err = net.Listen("tcp", cfg.GRPCAddress); err != nil {
			return nil, fmt.Errorf("grpc listener: %w", err)
		}
	}
	closers = append(closers, n.grpcLn.Close)
	if n.metricsLn = opts.MetricsListener; n.metricsLn == nil && cfg.MetricsAddress != "" {
		if n.metricsLn, err = net.Listen("tcp", cfg.MetricsAddress); err != nil {
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
		closers = append(closers, n.metricsLn.Close)
	}
	if err := n.peers.putSelf(n.selfEntry()); err != nil {
		return nil, err
	}

	pol := n.genesis.Policy
	depth := 4 * pol.MaxBlockTxs
	if depth < 1024 {
		depth = 1024
	}
	n.queue = make(chan *pendingTx, depth)
	n.inflight = make(chan struct{}, 8)
	return n, nil
}

// ID returns the node ID (hex SHA-256 of its public key).
func (n *Node) ID() string { return n.id }

// GRPCAddr returns the address the gRPC service listens on.
func (n *Node) GRPCAddr() string { return n.grpcLn.Addr().String() }

// RaftAddr returns the address raft listens on.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// MetricsAddr returns the /metrics listener's address, or "" when off.
func (n *Node) MetricsAddr() string {
	if n.metricsLn == nil {
		return ""
	}
	return n.metricsLn.Addr().String()
}

// FSM returns the node's ledger state machine (read-only use).
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// self is this node's addresses.
func (n *Node) self() PeerConfig {
	return PeerConfig{ID: n.id, RaftAddress: n.RaftAddr(), GRPCAddress: n.GRPCAddr()}
}

// selfEntry is this node's signed directory entry.
func (n *Node) selfEntry() peerEntry {
	return signPeer(n.key, n.genesis.ChainID, n.self(), n.selfSeq)
}

// watchStorage stops the node when pebble has hit an error it cannot
// recover from (a failed WAL write or fsync): every later write would fail,
// and retrying an fsync is not safe, so the process must restart and reopen
// its store (pebblestore.ErrFatal).
func (n *Node) watchStorage(ctx context.Context, errc chan<- error) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := n.db.Err(); err != nil {
				n.log.Error("storage failed: stopping the node; restart it to reopen its data", "err", err)
				select {
				case errc <- fmt.Errorf("storage: %w", err):
				default:
				}
				return
			}
		}
	}
}

// Run starts raft, the gRPC service and the metrics endpoint, and serves
// until ctx is cancelled; then it stops everything and closes the database.
// It returns nil after a clean stop.
func (n *Node) Run(ctx context.Context) error {
	if err := n.startRaft(); err != nil {
		n.closeAll()
		return err
	}
	n.log.InfoContext(ctx, "ledger node started", "id", n.id, "chain", n.genesis.ChainID,
		"raft", n.RaftAddr(), "grpc", n.GRPCAddr(), "metrics", n.MetricsAddr(), "height", n.fsm.Height())

	var wg sync.WaitGroup
	// Any key may call the client RPCs (the FSM refuses strangers' txs);
	// the node-to-node RPCs check the caller themselves (requireNode).
	creds, err := tlsid.ServerOption(n.key, tlsid.AllowAny())
	if err != nil {
		n.closeAll()
		return err
	}
	n.grpcSrv = grpc.NewServer(creds, grpc.MaxRecvMsgSize(client.MaxMsgSize), grpc.MaxSendMsgSize(client.MaxMsgSize))
	ledgerv1.RegisterLedgerServer(n.grpcSrv, &service{n: n})
	errc := make(chan error, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := n.grpcSrv.Serve(n.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("grpc serve: %w", err)
		}
	}()
	var msrv *http.Server
	if n.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{}))
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := msrv.Serve(n.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics serve: %w", err)
			}
		}()
	}
	loopCtx, cancelLoops := context.WithCancel(ctx)
	wg.Add(5)
	go func() { defer wg.Done(); n.batchLoop(loopCtx) }()
	go func() { defer wg.Done(); n.leaderLoop(loopCtx) }()
	go func() { defer wg.Done(); n.membershipLoop(loopCtx) }()
	go func() { defer wg.Done(); n.announce(loopCtx) }()
	go func() { defer wg.Done(); n.watchStorage(loopCtx, errc) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	n.log.Info("ledger node stopping")
	close(n.done)
	cancelLoops()
	stopped := make(chan struct{})
	go func() { n.grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		n.grpcSrv.Stop()
	}
	if msrv != nil {
		_ = msrv.Close()
	}
	wg.Wait()
	if err := n.closeAll(); err != nil && runErr == nil {
		runErr = err
	}
	n.log.Info("ledger node stopped")
	return runErr
}

// closeAll shuts raft down and closes the transport, client connections
// and the database.
func (n *Node) closeAll() error {
	var errs []error
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	if err := n.transport.Close(); err != nil {
		errs = append(errs, err)
	}
	_ = n.grpcLn.Close()
	if n.metricsLn != nil {
		_ = n.metricsLn.Close()
	}
	n.mu.Lock()
	for _, c := range n.conns {
		_ = c.Close()
	}
	n.conns = map[string]*grpc.ClientConn{}
	n.apis = map[string]ledgerv1.LedgerClient{}
	n.mu.Unlock()
	if err := n.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close database: %w", err))
	}
	return errors.Join(errs...)
}

// startRaft creates the raft instance and bootstraps the cluster when so
// configured and no raft state exists yet.
func (n *Node) startRaft() error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.id)
	rc.Logger = hclogFor(n.log, "raft")
	rc.HeartbeatTimeout = n.cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.Raft.CommitTimeout
	rc.SnapshotThreshold = n.cfg.Raft.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.Raft.SnapshotInterval
	rc.TrailingLogs = n.cfg.Raft.TrailingLogs
	// The FSM's state is durable in pebble and skips entries it already
	// applied, so a restart need not reload the latest snapshot, unless the
	// state is somehow behind it.
	if metas, err := n.snaps.List(); err == nil && (len(metas) == 0 || n.fsm.AppliedIndex() >= metas[0].Index) {
		rc.NoSnapshotRestoreOnStart = true
	}
	logs, stable := n.db.LogStore(), n.db.StableStore()
	hasState, err := raft.HasExistingState(logs, stable, n.snaps)
	if err != nil {
		return fmt.Errorf("raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, n.fsm, logs, stable, n.snaps, n.transport)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	if hasState {
		return nil
	}
	switch {
	case n.cfg.Bootstrap:
		if r, ok := n.fsm.NodeMember(n.id); n.fsm.NodesPinned() && (!ok || !r.IsVoter()) {
			return fmt.Errorf("%w: bootstrap: node %s is not one of the genesis file's nodes, so it may not propose; start it with \"join\" and have an admin add it (fedtune ledger join)", ErrConfig, n.id)
		}
		servers := []raft.Server{{ID: raft.ServerID(n.id), Address: raft.ServerAddress(n.RaftAddr()), Suffrage: raft.Voter}}
		for _, p := range n.cfg.Peers {
			if p.ID == n.id {
				continue
			}
			servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddress), Suffrage: raft.Voter})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrap: %w", err)
		}
		n.log.Info("bootstrapped cluster", "servers", len(servers))
	case n.cfg.Join != "":
		go n.joinVia(n.cfg.Join)
	}
	return nil
}

// joinVia tells the node at addr where this node is and learns the peer
// directory from it, retrying until it succeeds or the node stops. It
// does not change raft's configuration: an admin adds this node with a
// NodeAdded tx (fedtune ledger join), and the leader then adds it to raft.
func (n *Node) joinVia(addr string) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-n.done; cancel() }()
	defer cancel()
	for attempt := 0; ; attempt++ {
		cc, err := n.conn(addr, "")
		if err == nil {
			c := ledgerv1.NewLedgerClient(cc)
			var resp *ledgerv1.PeersResponse
			if resp, err = c.Peers(ctx, &ledgerv1.PeersRequest{Self: peerToProto(n.selfEntry(), "")}); err == nil {
				n.mergePeers(resp.Peers, addr)
				n.log.Info("announced to the cluster; an admin-signed NodeAdded (fedtune ledger join) adds this node to raft", "via", addr, "node_id", n.id)
				return
			}
		}
		n.log.Warn("contacting the cluster failed; retrying", "via", addr, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// connKey names a cached connection: the address and the node ID the
// server must prove ("" for any ledger node).
func connKey(addr, id string) string { return id + "@" + addr }

// conn returns a cached gRPC client connection over TLS to addr, where the
// server must prove node id's key, or any ledger node's when id is "".
func (n *Node) conn(addr, id string) (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := connKey(addr, id)
	if c, ok := n.conns[k]; ok {
		return c, nil
	}
	verify := n.nodeVerifier()
	if id != "" {
		verify = n.peerVerifier(id)
	}
	creds, err := tlsid.DialOption(n.key, verify)
	if err != nil {
		return nil, err
	}
	dopts := []grpc.DialOption{creds, client.CallSizes}
	if n.opts.Dialer != nil {
		dopts = append(dopts, grpc.WithContextDialer(n.opts.Dialer))
	}
	c, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	n.conns[k] = c
	return c, nil
}

// mergePeers stores the directory entries a node sent (from, for the log)
// that verify; the others are logged and dropped.
func (n *Node) mergePeers(ps []*ledgerv1.Peer, from string) {
	for _, p := range ps {
		e := peerFromProto(p)
		if e.ID == n.id {
			continue
		}
		if err := n.peers.putSigned(e); err != nil {
			n.log.Warn("dropped a peer directory entry", "from", from, "err", err)
		}
	}
}

// peerClient returns a Ledger client for node id, refreshing the peer
// directory from known peers when id is not in it.
func (n *Node) peerClient(ctx context.Context, id string) (ledgerv1.LedgerClient, error) {
	p, ok := n.peers.get(id)
	if !ok {
		n.refreshPeers(ctx)
		if p, ok = n.peers.get(id); !ok {
			return nil, fmt.Errorf("no gRPC address known for node %s", short(id))
		}
	}
	cc, err := n.conn(p.GRPCAddress, id)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	k := connKey(p.GRPCAddress, id)
	c, ok := n.apis[k]
	if !ok {
		c = ledgerv1.NewLedgerClient(cc)
		n.apis[k] = c
	}
	return c, nil
}

// refreshPeers merges the directories of every known peer into ours,
// announcing this node to them on the way.
func (n *Node) refreshPeers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	self := peerToProto(n.selfEntry(), "")
	for _, p := range n.peers.list() {
		if p.ID == n.id {
			continue
		}
		cc, err := n.conn(p.GRPCAddress, p.ID)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := ledgerv1.NewLedgerClient(cc).Peers(ctx, &ledgerv1.PeersRequest{Self: self})
			if err != nil {
				return
			}
			n.mergePeers(resp.Peers, short(p.ID))
		}()
	}
	wg.Wait()
}

// announce tells known peers this node's addresses once at start.
func (n *Node) announce(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(200 * time.Millisecond):
	}
	n.refreshPeers(ctx)
}

// leaderLoop tracks leadership for the metrics and logs.
func (n *Node) leaderLoop(ctx context.Context) {
	ch := n.raft.LeaderCh()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-ch:
			if isLeader {
				n.metrics.isLeader.Set(1)
				n.log.Info("became leader", "term", n.raft.Stats()["term"])
			} else {
				n.metrics.isLeader.Set(0)
				n.log.Info("lost leadership")
			}
		}
	}
}

// onBlock runs on raft's FSM goroutine after each applied block: it signs
// the block's checkpoint, records metrics and wakes block streams.
func (n *Node) onBlock(b *ledger.Block) {
	h := b.Header.Height
	cp := client.SignCheckpoint(n.key, n.genesis.ChainID, h, b.Hash())
	n.metrics.blocksApplied.Inc()
	n.metrics.txsCommitted.Add(float64(len(b.Txs)))
	n.metrics.height.Set(float64(h))
	n.mu.Lock()
	n.checkpoints[h] = cp
	const keep = 256
	if h >= keep {
		delete(n.checkpoints, h-keep)
	}
	close(n.newBlock)
	n.newBlock = make(chan struct{})
	n.mu.Unlock()
}

// blockSignal returns a channel closed when the next block is applied.
func (n *Node) blockSignal() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.newBlock
}

// waitHeight waits until the FSM has applied height h.
func (n *Node) waitHeight(ctx context.Context, h uint64) error {
	for {
		sig := n.blockSignal()
		if n.fsm.Height() >= h {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.done:
			return ErrStopped
		case <-sig:
		}
	}
}

// checkpoint returns this node's signed checkpoint for height h.
func (n *Node) checkpoint(h uint64) (client.Checkpoint, error) {
	n.mu.Lock()
	cp, ok := n.checkpoints[h]
	n.mu.Unlock()
	if ok {
		return cp, nil
	}
	if err := n.fsm.Err(); err != nil {
		return client.Checkpoint{}, err // never cosign a state this node cannot vouch for
	}
	b, err := n.fsm.Block(h)
	if err != nil {
		return client.Checkpoint{}, err
	}
	return client.SignCheckpoint(n.key, n.genesis.ChainID, h, b.Hash()), nil
}

// Snapshot makes raft take a snapshot now.
func (n *Node) Snapshot() error {
	return n.raft.Snapshot().Error()
}

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft != nil && n.raft.State() == raft.Leader }

// RaftStats returns raft's statistics (term, last_snapshot_index, ...).
func (n *Node) RaftStats() map[string]string { return n.raft.Stats() }
