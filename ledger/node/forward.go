package node

import (
	"context"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
)

// maxForwardTxs bounds the txs of one coalesced forward.
const maxForwardTxs = 1024

// forwarder coalesces the Submit calls a follower forwards to the leader:
// the calls that arrive while a flush is pending go out as one
// SubmitRequest per leader client, so that under load the leader serves a
// few larger RPCs instead of one per tx. The flush first yields to the
// goroutines ready to run, so on a busy node the handlers of requests that
// have already arrived add their calls to it; a lone call goes out at once.
// No flush waits for an earlier one's answer. In ledgerbench at 256 clients
// coalescing without the yield gained about 2% throughput, with it about 8%.
type forwarder struct {
	mu        sync.Mutex
	pending   []*forwardCall
	scheduled bool
}

// forwardCall is one Submit call waiting for its forwarded results.
type forwardCall struct {
	ctx  context.Context
	c    ledgerv1.LedgerClient
	txs  [][]byte
	hops uint32
	done chan forwardResult // buffered 1
}

type forwardResult struct {
	results []*ledgerv1.TxResult
	err     error
}

// forward submits txs through the leader client c with hops forwards so
// far, coalesced with concurrent calls, and returns their results in order.
// Like a direct Submit, an RPC error is returned as is (to every call
// coalesced into that RPC).
func (n *Node) forward(ctx context.Context, c ledgerv1.LedgerClient, txs [][]byte, hops uint32) ([]*ledgerv1.TxResult, error) {
	call := &forwardCall{ctx: ctx, c: c, txs: txs, hops: hops, done: make(chan forwardResult, 1)}
	fw := &n.fwd
	fw.mu.Lock()
	fw.pending = append(fw.pending, call)
	if !fw.scheduled {
		fw.scheduled = true
		go n.flushForwards()
	}
	fw.mu.Unlock()
	select {
	case r := <-call.done:
		return r.results, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// flushForwards sends every pending call, grouped by leader client and
// bounded by maxForwardTxs, one goroutine per RPC.
func (n *Node) flushForwards() {
	// Let the goroutines that are ready to run (under load: other Submit
	// handlers) queue their calls first; when none are, this returns at once.
	runtime.Gosched()
	fw := &n.fwd
	fw.mu.Lock()
	calls := fw.pending
	fw.pending, fw.scheduled = nil, false
	fw.mu.Unlock()
	for len(calls) > 0 {
		c := calls[0].c
		var group, rest []*forwardCall
		count := 0
		for _, call := range calls {
			if call.c == c && (len(group) == 0 || count+len(call.txs) <= maxForwardTxs) {
				group = append(group, call)
				count += len(call.txs)
			} else {
				rest = append(rest, call)
			}
		}
		calls = rest
		go n.sendForward(c, group, count)
	}
}

// sendForward sends one coalesced SubmitRequest and hands each call its
// share of the results. The RPC is cancelled when the node stops or when
// the latest deadline among the calls passes (none: no deadline), not when
// one caller gives up: the others still wait for it.
func (n *Node) sendForward(c ledgerv1.LedgerClient, group []*forwardCall, count int) {
	if len(group) == 1 {
		call := group[0]
		resp, err := c.Submit(call.ctx, &ledgerv1.SubmitRequest{Txs: call.txs, Hops: call.hops})
		if err != nil {
			call.done <- forwardResult{err: err}
		} else {
			call.done <- forwardResult{results: resp.Results}
		}
		return
	}
	req := &ledgerv1.SubmitRequest{Txs: make([][]byte, 0, count)}
	var deadline time.Time
	noDeadline := false
	for _, call := range group {
		req.Txs = append(req.Txs, call.txs...)
		// The most forwards any of them has had: the loop bound holds for all.
		req.Hops = max(req.Hops, call.hops)
		if d, ok := call.ctx.Deadline(); !ok {
			noDeadline = true
		} else if d.After(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !noDeadline {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, deadline)
		defer cancelDeadline()
	}
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	resp, err := c.Submit(ctx, req)
	if err == nil && len(resp.Results) != count {
		err = status.Errorf(codes.Internal, "leader answered %d results for %d forwarded txs", len(resp.Results), count)
	}
	off := 0
	for _, call := range group {
		if err != nil {
			call.done <- forwardResult{err: err}
			continue
		}
		call.done <- forwardResult{results: resp.Results[off : off+len(call.txs)]}
		off += len(call.txs)
	}
}
