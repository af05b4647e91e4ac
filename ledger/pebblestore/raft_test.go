package pebblestore_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

// counterFSM keeps a counter and the last applied index in the pebble state
// range. Because the state is durable, raft replaying committed entries on
// restart must not apply them twice: Apply skips indexes at or below the
// stored applied index (the pattern the ledger FSM follows).
type counterFSM struct {
	state *pebblestore.State
	mu    sync.Mutex
}

var (
	keyCount   = []byte("count")
	keyApplied = []byte("applied")
)

func getU64(t interface {
	Get([]byte) ([]byte, bool, error)
}, k []byte) (uint64, error) {
	v, ok, err := t.Get(k)
	if err != nil || !ok {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

func (f *counterFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.state.NewBatch()
	defer b.Close()
	applied, err := getU64(b, keyApplied)
	if err != nil {
		return err
	}
	if l.Index <= applied {
		return nil // replayed after a restart
	}
	n, err := getU64(b, keyCount)
	if err != nil {
		return err
	}
	switch id, tagged := strings.CutPrefix(string(l.Data), "inc:"); {
	case string(l.Data) == "inc":
		n++
	case tagged:
		// An increment with an ID counts once however often it is
		// applied: a client may retry one whose fate it does not know.
		k := []byte("seen/" + id)
		_, seen, err := b.Get(k)
		if err != nil {
			return err
		}
		if !seen {
			n++
			if err := b.Set(k, nil); err != nil {
				return err
			}
		}
	}
	if err := b.Set(keyCount, binary.BigEndian.AppendUint64(nil, n)); err != nil {
		return err
	}
	if err := b.Set(keyApplied, binary.BigEndian.AppendUint64(nil, l.Index)); err != nil {
		return err
	}
	if err := b.Commit(); err != nil {
		return err
	}
	return n
}

func (f *counterFSM) count() uint64 {
	n, _ := getU64(f.state, keyCount)
	return n
}

func (f *counterFSM) Snapshot() (raft.FSMSnapshot, error) {
	return fsmSnap{f.state.Snapshot()}, nil
}

func (f *counterFSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	return f.state.Restore(r)
}

type fsmSnap struct{ sn *pebblestore.Snapshot }

func (s fsmSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := s.sn.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnap) Release() { _ = s.sn.Close() }

// raftNode is one member of the test cluster; fs and snaps outlive restarts.
type raftNode struct {
	id    raft.ServerID
	addr  raft.ServerAddress
	fs    vfs.FS
	snaps *raft.InmemSnapshotStore
	db    *pebblestore.DB
	fsm   *counterFSM
	trans *raft.InmemTransport
	raft  *raft.Raft
}

func (n *raftNode) start(t *testing.T) {
	t.Helper()
	db, err := pebblestore.Open("node", pebblestore.Options{FS: n.fs})
	must(t, err)
	n.db = db
	n.fsm = &counterFSM{state: db.State()}
	_, n.trans = raft.NewInmemTransport(n.addr)
	conf := raft.DefaultConfig()
	conf.LocalID = n.id
	// The timings of ledger/node's testRaft: fast enough for tests yet
	// stable on two busy cores under -race (tighter ones let a descheduled
	// follower call elections that fail Applies).
	conf.HeartbeatTimeout = 500 * time.Millisecond
	conf.ElectionTimeout = 500 * time.Millisecond
	conf.LeaderLeaseTimeout = 250 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotThreshold = 1 << 30 // snapshots only when the test asks
	conf.TrailingLogs = 10
	conf.LogOutput = io.Discard
	r, err := raft.NewRaft(conf, n.fsm, db.LogStore(), db.StableStore(), n.snaps, n.trans)
	must(t, err)
	n.raft = r
}

func (n *raftNode) stop(t *testing.T) {
	t.Helper()
	must(t, n.raft.Shutdown().Error())
	must(t, n.db.Close())
}

func connectAll(nodes []*raftNode) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && a.raft != nil && b.raft != nil {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leaderOf(nodes []*raftNode) *raftNode {
	for _, n := range nodes {
		if n.raft != nil && n.raft.State() == raft.Leader {
			return n
		}
	}
	return nil
}

// applyWithin applies data through r (timeout bounds the enqueueing, as
// for Apply) and waits at most wait for the outcome.
// The bound matters: an ApplyFuture whose entry was queued for the FSM when
// its node shut down is never answered, and its Error blocks forever
// (hashicorp/raft#498). The goroutine left waiting on such a future is
// leaked, blocked on a channel.
func applyWithin(r *raft.Raft, data []byte, timeout, wait time.Duration) error {
	f := r.Apply(data, timeout)
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err := <-errc:
		return err
	case <-timer.C:
		return fmt.Errorf("apply not answered within %v", wait)
	}
}

// incIDs numbers applyN's increments.
var incIDs atomic.Uint64

// applyN applies n increments through the leader of nodes. Each increment
// carries an ID and is retried with the same ID until acknowledged: an
// Apply that fails with "leadership lost while committing" may still have
// committed, and the FSM counts an ID once. It fails if the n are not all
// acknowledged within a minute.
func applyN(t *testing.T, nodes []*raftNode, n int) {
	t.Helper()
	const limit = time.Minute
	deadline := time.Now().Add(limit)
	var lastErr error
	for i := 0; i < n; {
		if time.Now().After(deadline) {
			t.Fatalf("applied %d of %d increments in %v; last error: %v", i, n, limit, lastErr)
		}
		var l *raftNode
		waitFor(t, "a leader", func() bool { l = leaderOf(nodes); return l != nil })
		id := fmt.Sprintf("inc:%d", incIDs.Load())
		if err := applyWithin(l.raft, []byte(id), 5*time.Second, 10*time.Second); err != nil {
			t.Logf("apply on %s: %v; retrying", l.id, err)
			lastErr = err
			continue
		}
		incIDs.Add(1)
		i++
	}
}

// A real 3-node raft cluster on pebble stores: elect, apply, stop a
// follower, apply and compact past it, restart it from its own store (and
// from a snapshot the leader sends), and see it catch up; then restart the
// whole cluster and see nothing lost or applied twice.
func TestRaftClusterOnPebble(t *testing.T) {
	var nodes []*raftNode
	var servers []raft.Server
	for i := range 3 {
		n := &raftNode{
			id:    raft.ServerID(fmt.Sprintf("n%d", i)),
			addr:  raft.ServerAddress(fmt.Sprintf("addr%d", i)),
			fs:    vfs.NewMem(),
			snaps: raft.NewInmemSnapshotStore(),
		}
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: n.id, Address: n.addr, Suffrage: raft.Voter})
	}
	for _, n := range nodes {
		n.start(t)
	}
	connectAll(nodes)
	must(t, nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error())
	defer func() {
		for _, n := range nodes {
			if n.raft != nil {
				n.stop(t)
			}
		}
	}()

	applyN(t, nodes, 50)
	allAt := func(want uint64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("every node to count %d", want), func() bool {
			for _, n := range nodes {
				if n.fsm.count() != want {
					return false
				}
			}
			return true
		})
	}
	allAt(50)

	// Stop a follower; the others go on and compact their logs past it.
	var down *raftNode
	for _, n := range nodes {
		if n.raft.State() != raft.Leader {
			down = n
			break
		}
	}
	down.stop(t)
	down.raft = nil
	live := []*raftNode{}
	for _, n := range nodes {
		if n != down {
			live = append(live, n)
		}
	}
	applyN(t, live, 60)
	for _, n := range live {
		must(t, n.raft.Snapshot().Error())
	}
	applyN(t, live, 5)
	var l *raftNode
	waitFor(t, "a leader", func() bool { l = leaderOf(live); return l != nil })
	first, err := l.db.LogStore().FirstIndex()
	must(t, err)
	downLast, err := func() (uint64, error) {
		db, err := pebblestore.Open("node", pebblestore.Options{FS: down.fs})
		if err != nil {
			return 0, err
		}
		defer db.Close()
		return db.LogStore().LastIndex()
	}()
	must(t, err)
	if first <= downLast+1 {
		t.Fatalf("leader log starts at %d, stopped node has up to %d: no snapshot install needed", first, downLast)
	}

	// Restart it from its store: it must catch up through a snapshot.
	down.start(t)
	connectAll(nodes)
	allAt(115)
	applyN(t, nodes, 10)
	allAt(125)

	// Restart everything: the durable FSM state and the logs agree; no entry
	// is applied twice (count stays 125 after replay).
	for _, n := range nodes {
		n.stop(t)
		n.raft = nil
	}
	for _, n := range nodes {
		n.start(t)
	}
	connectAll(nodes)
	applyN(t, nodes, 1)
	allAt(126)
}

// Nodes of a live cluster are crashed (their pebble files cut back to a
// crash clone keeping a random share of unsynced data) and restarted from
// what survived, the leader included, while a client applies entries. Every
// acknowledged Apply survives, and all nodes converge on one count.
func TestRaftCrashRestartOnPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("crashes nodes of a raft cluster")
	}
	rng := rand.New(rand.NewPCG(5, 8))
	var nodes []*raftNode
	var servers []raft.Server
	for i := range 3 {
		n := &raftNode{
			id:    raft.ServerID(fmt.Sprintf("n%d", i)),
			addr:  raft.ServerAddress(fmt.Sprintf("addr%d", i)),
			fs:    fedtest.NewCrashFS(),
			snaps: raft.NewInmemSnapshotStore(),
		}
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: n.id, Address: n.addr, Suffrage: raft.Voter})
	}
	for _, n := range nodes {
		n.start(t)
	}
	connectAll(nodes)
	must(t, nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error())

	var mu sync.Mutex // guards nodes[i].raft while a node restarts
	var acked, attempted atomic.Int64
	stop := make(chan struct{})
	stopWriter := sync.OnceFunc(func() { close(stop) })
	done := make(chan struct{})
	// However the test ends (a failed must included), the writer stops and
	// no raft node is left running.
	t.Cleanup(func() {
		stopWriter()
		for _, n := range nodes {
			if n.raft != nil {
				_ = n.raft.Shutdown().Error()
			}
			if n.db != nil {
				_ = n.db.Close()
			}
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("the writer goroutine did not stop within 30s")
		}
	})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			var r *raft.Raft
			if l := leaderOf(nodes); l != nil {
				r = l.raft
			}
			mu.Unlock()
			if r == nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			attempted.Add(1)
			// Bounded: the Apply may be cut off by a crash (see applyWithin).
			if applyWithin(r, []byte("inc"), time.Second, 10*time.Second) == nil {
				acked.Add(1)
			}
		}
	}()

	for round := range 4 {
		// Each crash hits a cluster with a leader the writer applies through.
		waitFor(t, "a leader", func() bool { return leaderOf(nodes) != nil })
		time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond)
		// mu is released however the restart ends (a failed must exits
		// through the deferred Unlock), so the writer never waits on it
		// forever.
		func() {
			mu.Lock()
			defer mu.Unlock()
			victim := nodes[rng.IntN(3)]
			if round == 1 {
				if l := leaderOf(nodes); l != nil {
					victim = l
				}
			}
			crashed := victim.fs.(*fedtest.CrashFS).CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
			// The process dies: raft stops, and what the old files get from
			// now on is lost with them.
			must(t, victim.raft.Shutdown().Error())
			_ = victim.db.Close()
			for _, n := range nodes {
				if n != victim {
					n.trans.Disconnect(victim.addr)
				}
			}
			victim.fs = crashed
			victim.start(t)
			connectAll(nodes)
		}()
	}
	time.Sleep(200 * time.Millisecond)
	stopWriter()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("the writer goroutine did not stop within a minute (%d applies acknowledged of %d attempted)", acked.Load(), attempted.Load())
	}
	applyN(t, nodes, 1) // a final entry everyone must apply
	acked.Add(1)
	attempted.Add(1)

	var counts []uint64
	waitFor(t, "the nodes to converge", func() bool {
		counts = counts[:0]
		for _, n := range nodes {
			counts = append(counts, n.fsm.count())
		}
		return counts[0] == counts[1] && counts[1] == counts[2]
	})
	if got := int64(counts[0]); got < acked.Load() || got > attempted.Load() {
		t.Fatalf("nodes count %d; acknowledged %d, attempted %d", got, acked.Load(), attempted.Load())
	}
	t.Logf("%d entries applied (%d acknowledged, %d attempted) across 4 crashes", counts[0], acked.Load(), attempted.Load())
	for _, n := range nodes {
		n.stop(t)
	}
}
