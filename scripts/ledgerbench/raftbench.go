package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// A bench transaction: signer index (2 bytes), nonce (8), body, and an
// ed25519 signature (64) over everything before it. The FSM looks the signer
// up in the member list (the permissioned part), checks the signature and
// that the nonce is above the signer's last, and records the tx by hash.
const txOverhead = 2 + 8 + ed25519.SignatureSize

type members struct {
	pubs []ed25519.PublicKey
}

// benchFSM verifies and applies transactions into a pebblestore.State, one
// pebble batch per raft batch (raft.BatchingFSM).
type benchFSM struct {
	state   *pebblestore.State
	members *members
	applied atomic.Uint64
	// verifyNanos and applyNanos add up time spent verifying signatures and
	// committing state batches.
	verifyNanos, commitNanos atomic.Int64
	nonces                   map[uint16]uint64
	// syncCommits makes each state batch a synced commit (a second fsync
	// per raft batch) instead of CommitNoSync.
	syncCommits bool
}

var errBadTx = errors.New("bad tx")

func (f *benchFSM) verify(tx []byte) (uint16, uint64, error) {
	if len(tx) < txOverhead {
		return 0, 0, fmt.Errorf("%w: %d bytes", errBadTx, len(tx))
	}
	signer := binary.BigEndian.Uint16(tx)
	nonce := binary.BigEndian.Uint64(tx[2:])
	if int(signer) >= len(f.members.pubs) {
		return 0, 0, fmt.Errorf("%w: unknown signer %d", errBadTx, signer)
	}
	msg, sig := tx[:len(tx)-ed25519.SignatureSize], tx[len(tx)-ed25519.SignatureSize:]
	if !ed25519.Verify(f.members.pubs[signer], msg, sig) {
		return 0, 0, fmt.Errorf("%w: bad signature from %d", errBadTx, signer)
	}
	return signer, nonce, nil
}

// ApplyBatch verifies and applies a raft batch in one state batch.
func (f *benchFSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	b := f.state.NewBatch()
	defer b.Close()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		t0 := time.Now()
		signer, nonce, err := f.verify(l.Data)
		f.verifyNanos.Add(int64(time.Since(t0)))
		if err != nil {
			out[i] = err
			continue
		}
		if nonce <= f.nonces[signer] {
			out[i] = fmt.Errorf("%w: stale nonce %d from %d", errBadTx, nonce, signer)
			continue
		}
		f.nonces[signer] = nonce
		h := sha256.Sum256(l.Data)
		if err := b.Set(append([]byte("tx/"), h[:]...), binary.BigEndian.AppendUint64(nil, l.Index)); err != nil {
			out[i] = err
		}
	}
	if n := len(logs); n > 0 {
		if err := b.Set([]byte("applied"), binary.BigEndian.AppendUint64(nil, logs[n-1].Index)); err != nil {
			panic(err)
		}
		t0 := time.Now()
		// The raft log entries are already synced in the same WAL; see
		// pebblestore.Batch.CommitNoSync.
		commit := b.CommitNoSync
		if f.syncCommits {
			commit = b.Commit
		}
		if err := commit(); err != nil {
			panic(err)
		}
		f.commitNanos.Add(int64(time.Since(t0)))
		f.applied.Store(logs[n-1].Index)
	}
	return out
}

// Apply applies one entry.
func (f *benchFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// Snapshot takes a pebble snapshot of the state.
func (f *benchFSM) Snapshot() (raft.FSMSnapshot, error) {
	return benchSnap{f.state.Snapshot()}, nil
}

// Restore replaces the state with a snapshot stream.
func (f *benchFSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	return f.state.Restore(r)
}

type benchSnap struct{ sn *pebblestore.Snapshot }

// Persist streams the snapshot into sink.
func (s benchSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := s.sn.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

// Release closes the pebble snapshot.
func (s benchSnap) Release() { _ = s.sn.Close() }

// countingLog wraps a LogStore to count StoreLogs calls (one fsync each),
// entries and time spent.
type countingLog struct {
	*pebblestore.LogStore
	calls, entries, nanos atomic.Int64
}

// StoreLogs stores and counts.
func (c *countingLog) StoreLogs(logs []*raft.Log) error {
	t0 := time.Now()
	err := c.LogStore.StoreLogs(logs)
	c.nanos.Add(int64(time.Since(t0)))
	c.calls.Add(1)
	c.entries.Add(int64(len(logs)))
	return err
}

// StoreLog stores and counts one entry.
func (c *countingLog) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

type benchNode struct {
	db    *pebblestore.DB
	fsm   *benchFSM
	log   *countingLog
	trans *raft.NetworkTransport
	raft  *raft.Raft
}

func runRaft(args []string) error {
	fs := flag.NewFlagSet("raft", flag.ContinueOnError)
	concs := fs.String("conc", "1,16,256", "comma-separated numbers of concurrent clients")
	duration := fs.Duration("duration", 10*time.Second, "measured time per level")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before each level")
	size := fs.Int("size", 512, "bytes per signed tx (signature included)")
	dir := fs.String("dir", "", "directory for the nodes' data (default: a new temp dir, removed after)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the measured runs to this file")
	fsmSync := fs.Bool("fsm-sync", false, "commit the FSM's state batches synced (a second fsync per raft batch) rather than with CommitNoSync")
	if err := fs.Parse(args); err != nil {
		return err
	}
	levels, err := parseLevels(*concs)
	if err != nil {
		return err
	}
	if *size < txOverhead+1 {
		return fmt.Errorf("-size must be at least %d", txOverhead+1)
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "ledgerbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	maxConc := 0
	for _, c := range levels {
		maxConc = max(maxConc, c)
	}
	// One signer per client, so that nonces from one signer arrive in order.
	mem := &members{}
	keys := make([]ed25519.PrivateKey, maxConc)
	for i := range keys {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			return err
		}
		keys[i] = priv
		mem.pubs = append(mem.pubs, pub)
	}

	nodes, err := startCluster(*dir, mem, *fsmSync)
	if err != nil {
		return err
	}
	defer func() {
		for _, n := range nodes {
			_ = n.raft.Shutdown().Error()
			_ = n.trans.Close()
			_ = n.db.Close()
		}
	}()
	leader, err := waitLeader(nodes, 20*time.Second)
	if err != nil {
		return err
	}
	progress("3 raft nodes up over TCP, leader %s; txs of %d bytes", leader.trans.LocalAddr(), *size)

	stopProfile, err := startCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	nonces := make([]uint64, maxConc)
	for _, conc := range levels {
		if *warmup > 0 {
			if _, _, err := driveRaft(nodes, keys[:conc], nonces, *size, *warmup); err != nil {
				return err
			}
		}
		before := snapshotCounters(nodes)
		lats, elapsed, err := driveRaft(nodes, keys[:conc], nonces, *size, *duration)
		if err != nil {
			return err
		}
		result("fedtune-raft", conc, lats, elapsed)
		breakdown(conc, len(lats), before, snapshotCounters(nodes), leaderIndex(nodes))
	}
	return nil
}

func startCluster(dir string, mem *members, fsmSync bool) ([]*benchNode, error) {
	var nodes []*benchNode
	var servers []raft.Server
	for i := range 3 {
		ndir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		db, err := pebblestore.Open(filepath.Join(ndir, "pebble"), pebblestore.Options{})
		if err != nil {
			return nil, err
		}
		trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 8, 10*time.Second, io.Discard)
		if err != nil {
			return nil, err
		}
		snaps, err := raft.NewFileSnapshotStore(ndir, 2, io.Discard)
		if err != nil {
			return nil, err
		}
		n := &benchNode{
			db:    db,
			fsm:   &benchFSM{state: db.State(), members: mem, nonces: map[uint16]uint64{}, syncCommits: fsmSync},
			log:   &countingLog{LogStore: db.LogStore()},
			trans: trans,
		}
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(fmt.Sprintf("n%d", i))
		conf.LogOutput = io.Discard
		conf.MaxAppendEntries = 256
		conf.BatchApplyCh = true
		conf.SnapshotThreshold = 1 << 20 // keep snapshots out of a 10 s run
		n.raft, err = raft.NewRaft(conf, n.fsm, n.log, db.StableStore(), snaps, trans)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: conf.LocalID, Address: trans.LocalAddr(), Suffrage: raft.Voter})
	}
	if err := nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return nodes, nil
}

func waitLeader(nodes []*benchNode, d time.Duration) (*benchNode, error) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if i := leaderIndex(nodes); i >= 0 {
			return nodes[i], nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, errors.New("no raft leader elected")
}

func leaderIndex(nodes []*benchNode) int {
	for i, n := range nodes {
		if n.raft.State() == raft.Leader {
			return i
		}
	}
	return -1
}

// driveRaft has one client per key submit signed txs to the leader and wait
// for each to be applied by the leader's FSM (raft.Apply's future), for d.
func driveRaft(nodes []*benchNode, keys []ed25519.PrivateKey, nonces []uint64, size int, d time.Duration) ([]time.Duration, time.Duration, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []time.Duration
		firstErr error
	)
	start := time.Now()
	stop := start.Add(d)
	for c, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := make([]byte, size-txOverhead)
			for j := range body {
				body[j] = byte(c + j)
			}
			var lats []time.Duration
			var err error
			for time.Now().Before(stop) {
				nonces[c]++
				tx := make([]byte, 0, size)
				tx = binary.BigEndian.AppendUint16(tx, uint16(c))
				tx = binary.BigEndian.AppendUint64(tx, nonces[c])
				tx = append(tx, body...)
				tx = append(tx, ed25519.Sign(key, tx)...)
				t0 := time.Now()
				li := leaderIndex(nodes)
				if li < 0 {
					err = errors.New("no leader")
					break
				}
				f := nodes[li].raft.Apply(tx, 10*time.Second)
				if err = f.Error(); err != nil {
					break
				}
				if rerr, ok := f.Response().(error); ok && rerr != nil {
					err = rerr
					break
				}
				lats = append(lats, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lats...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, 0, firstErr
	}
	return all, time.Since(start), nil
}

type counters struct {
	storeCalls, storeEntries, storeNanos [3]int64
	verifyNanos, commitNanos             [3]int64
}

func snapshotCounters(nodes []*benchNode) counters {
	var c counters
	for i, n := range nodes {
		c.storeCalls[i] = n.log.calls.Load()
		c.storeEntries[i] = n.log.entries.Load()
		c.storeNanos[i] = n.log.nanos.Load()
		c.verifyNanos[i] = n.fsm.verifyNanos.Load()
		c.commitNanos[i] = n.fsm.commitNanos.Load()
	}
	return c
}

// breakdown prints where the time of one level went: per committed tx, the
// CPU time of ed25519 verification on all three nodes, and on the leader the
// synced StoreLogs calls (one fsync each), entries per fsync and time in
// them.
func breakdown(conc, ops int, a, b counters, leader int) {
	if ops == 0 || leader < 0 {
		return
	}
	var verify, commit int64
	for i := range 3 {
		verify += b.verifyNanos[i] - a.verifyNanos[i]
		commit += b.commitNanos[i] - a.commitNanos[i]
	}
	calls := b.storeCalls[leader] - a.storeCalls[leader]
	entries := b.storeEntries[leader] - a.storeEntries[leader]
	storeNs := b.storeNanos[leader] - a.storeNanos[leader]
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "BREAKDOWN system=fedtune-raft conc=%d", conc)
	fmt.Fprintf(&buf, " verify_us_per_tx_3nodes=%.1f", float64(verify)/float64(ops)/1e3)
	fmt.Fprintf(&buf, " fsm_commit_us_per_tx_3nodes=%.1f", float64(commit)/float64(ops)/1e3)
	if calls > 0 {
		fmt.Fprintf(&buf, " leader_fsyncs=%d entries_per_fsync=%.1f storelogs_ms_avg=%.3f",
			calls, float64(entries)/float64(calls), float64(storeNs)/float64(calls)/1e6)
	}
	fmt.Println(buf.String())
}
