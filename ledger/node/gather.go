package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/fedtune/fedtune/ledger/client"
)

// Bounds on the cosignature gathering behind GetBlock (and the
// GetCheckpoint calls it makes), so that no caller can amplify one request
// into unbounded work on the nodes.
const (
	// maxGathers is how many heights' cosignatures a node gathers at once;
	// further GetBlock calls wait for a slot (or their deadline).
	maxGathers = 4
	// maxFetchParallel bounds the GetCheckpoint calls of one gather in
	// flight at once.
	maxFetchParallel = 8
	// gatherTimeout bounds one gather, whoever waits for it.
	gatherTimeout = 3 * time.Second
	// gatherRetry is how long a gather that missed some cosignatures is
	// reused before a later GetBlock tries again.
	gatherRetry = 250 * time.Millisecond
	// gatherCacheSize is how many heights' gathers are kept.
	gatherCacheSize = 256
	// checkpointWait bounds how long GetCheckpoint waits for a height to be
	// applied here.
	checkpointWait = 5 * time.Second
	// maxCheckpointLead is how far beyond its head a node waits for a
	// height in GetCheckpoint; further ahead it answers at once.
	maxCheckpointLead = 64
)

// gathered is one height's gather: running until done is closed, then
// its result.
type gathered struct {
	hash     [32]byte
	done     chan struct{}
	at       time.Time
	cps      []client.Checkpoint
	failures []string
}

// gatherCache holds the gathers of recent heights and the slots that
// bound how many run at once.
type gatherCache struct {
	mu     sync.Mutex
	m      map[uint64]*gathered
	order  []uint64 // insertion order, for eviction
	slots  chan struct{}
	starts int // gathers started (tests)
}

// cosignatures returns the checkpoints for block (h, hash) gathered from
// this node and the other cosigning nodes, and why any are missing. One
// gather per height serves every concurrent and later caller: a complete
// one is kept, one with failures is reused for gatherRetry. At most
// maxGathers run at once; a caller whose ctx ends while waiting gets an
// empty answer saying so.
func (n *Node) cosignatures(ctx context.Context, h uint64, hash [32]byte) ([]client.Checkpoint, []string) {
	gc := &n.gathers
	gc.mu.Lock()
	if gc.m == nil {
		gc.m = map[uint64]*gathered{}
		gc.slots = make(chan struct{}, maxGathers)
	}
	g, ok := gc.m[h]
	if ok && g.hash == hash {
		select {
		case <-g.done:
			if len(g.failures) > 0 && time.Since(g.at) > gatherRetry {
				ok = false // stale partial result: gather again
			}
		default:
		}
	} else {
		ok = false
	}
	if !ok {
		g = &gathered{hash: hash, done: make(chan struct{})}
		if _, had := gc.m[h]; !had {
			gc.order = append(gc.order, h)
		}
		gc.m[h] = g
		for len(gc.order) > gatherCacheSize {
			delete(gc.m, gc.order[0])
			gc.order = gc.order[1:]
		}
		gc.starts++
		go n.runGather(g, h)
	}
	gc.mu.Unlock()
	select {
	case <-g.done:
		return g.cps, g.failures
	case <-ctx.Done():
		return nil, []string{fmt.Sprintf("gathering cosignatures for height %d: %v", h, ctx.Err())}
	}
}

// runGather fills g once a gather slot is free.
func (n *Node) runGather(g *gathered, h uint64) {
	defer close(g.done)
	ctx, cancel := context.WithTimeout(context.Background(), gatherTimeout)
	defer cancel()
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	gc := &n.gathers
	select {
	case gc.slots <- struct{}{}:
		defer func() { <-gc.slots }()
	case <-ctx.Done():
		g.at = time.Now()
		g.failures = []string{fmt.Sprintf("no gather slot free within %v (%d gathers running)", gatherTimeout, maxGathers)}
		return
	}
	g.cps, g.failures = n.gatherCheckpoints(ctx, h, g.hash)
	g.at = time.Now()
}
