package node_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// faultEnv names a file whose appearance makes a child-process node's disk
// fail every sync of pebble's write-ahead log (see walFaultFS).
const faultEnv = "FEDTUNE_LEDGER_NODE_HELPER_WAL_FAULT"

// walSyncFault fails every sync of pebble's write-ahead log once armed.
type walSyncFault struct {
	armed atomic.Bool
}

func (f *walSyncFault) MaybeError(op errorfs.Op) error {
	if !f.armed.Load() || !strings.HasSuffix(op.Path, ".log") {
		return nil
	}
	switch op.Kind {
	case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		return errorfs.ErrInjected
	}
	return nil
}

func (f *walSyncFault) String() string { return "fail WAL syncs" }

// walFaultFS is the OS filesystem with WAL syncs failing from the moment
// armFile exists.
func walFaultFS(ctx context.Context, armFile string) vfs.FS {
	f := &walSyncFault{}
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := os.Stat(armFile); err == nil {
					f.armed.Store(true)
					return
				}
			}
		}
	}()
	return errorfs.Wrap(vfs.Default, f)
}

// A node whose disk fails an fsync of pebble's WAL stops with an error that
// wraps pebblestore.ErrFatal (retrying an fsync is not safe) and a non-zero
// exit; the other two nodes go on committing; restarted on the same
// directory with a healthy disk, the node reopens its store, catches up and
// holds the same chain. The node runs as a child process because after a
// fatal storage error pebble cannot be closed, so only a new process can
// reopen the directory, as in production.
func TestStorageFaultStopsNode(t *testing.T) {
	c := newCluster(t, 3, 2)
	armFile := filepath.Join(c.dir, "arm-wal-fault")
	faulty := c.nodes[2]
	faulty.env = []string{faultEnv + "=" + armFile}
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	c.leader(c.nodes...)
	c.waitHeight(c.submitRetry(c.nodes[0]), c.nodes...)

	if err := os.WriteFile(armFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Writes go on through the healthy nodes (forwarded to the leader) until
	// the faulty node, which notices the arm file within 20ms, meets a failed
	// sync on a raft log append and stops. If it leads, its own append
	// fails, it steps down and a healthy node takes over; submissions
	// meanwhile may fail, and are retried with a fresh tx (nonces need only
	// increase).
	var last uint64
	var runErr error
	healthy := c.nodes[:2]
	deadline := time.Now().Add(30 * time.Second)
wait:
	for i := 0; ; i++ {
		select {
		case runErr = <-faulty.done:
			break wait
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("node 2 still runs 30s after its WAL syncs began to fail")
		}
		last = c.submitRetry(healthy[i%2])
	}
	faulty.cmd = nil
	var exit *exec.ExitError
	if !errors.As(runErr, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("node 2 ended with %v, want exit status 1", runErr)
	}
	faulty.log.Close()
	faulty.log = nil
	logText, err := os.ReadFile(filepath.Join(c.dir, "node2.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"storage failed: stopping the node", "fatal storage error"} {
		if !bytes.Contains(logText, []byte(want)) {
			t.Errorf("node 2's output lacks %q:\n%s", want, tail(logText, 3000))
		}
	}
	c.waitHeight(last, healthy...)

	// Restart with a healthy disk.
	faulty.env = nil
	faulty.start(faulty.config(3, ""))
	last = c.submitRetry(c.nodes[0])
	c.waitHeight(last, c.nodes...)
	want := c.nodes[0].chain(last)
	for _, nd := range c.nodes[1:] {
		got := nd.chain(last)
		if len(got) != len(want) {
			t.Fatalf("node %d has %d blocks up to %d, node 0 has %d", nd.idx, len(got), last, len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("node %d block %d differs from node 0's", nd.idx, i)
			}
		}
	}
}

// submitRetry submits fresh admin txs through nd until one commits, for up
// to 30s, and returns its height.
func (c *cluster) submitRetry(nd *tnode) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tx, _ := c.adminTx()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, err := nd.client.SubmitWait(ctx, tx)
		cancel()
		if err == nil {
			return h
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no tx committed through node %d in 30s: %v", nd.idx, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
