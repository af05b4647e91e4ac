package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
)

// fakeLeader is a Ledger client whose Submit answers every tx with its
// hash, records the requests, and can fail or answer short.
type fakeLeader struct {
	ledgerv1.LedgerClient
	mu    sync.Mutex
	reqs  []*ledgerv1.SubmitRequest
	err   error
	short bool
	block chan struct{} // if set, Submit waits for it to close
}

func (f *fakeLeader) Submit(_ context.Context, req *ledgerv1.SubmitRequest, _ ...grpc.CallOption) (*ledgerv1.SubmitResponse, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if f.block != nil {
		<-f.block
	}
	if f.err != nil {
		return nil, f.err
	}
	resp := &ledgerv1.SubmitResponse{}
	for _, tx := range req.Txs {
		h := sha256.Sum256(tx)
		resp.Results = append(resp.Results, &ledgerv1.TxResult{Hash: h[:], Status: ledgerv1.TxStatus_TX_STATUS_COMMITTED})
	}
	if f.short {
		resp.Results = resp.Results[1:]
	}
	return resp, nil
}

// TestFlushForwardsCoalesces: the calls pending at a flush go out as one
// request per leader client, their txs in order, with the highest hop
// count; each call gets its own share of the results, or the RPC's error.
func TestFlushForwardsCoalesces(t *testing.T) {
	n := &Node{done: make(chan struct{})}
	a, b := &fakeLeader{}, &fakeLeader{}
	fail := &fakeLeader{err: status.Error(codes.Unavailable, "leader gone")}
	short := &fakeLeader{short: true}
	txs := func(prefix string, k int) [][]byte {
		var out [][]byte
		for i := range k {
			out = append(out, []byte(fmt.Sprint(prefix, i)))
		}
		return out
	}
	type call struct {
		c    *fakeLeader
		txs  [][]byte
		hops uint32
		fc   *forwardCall
	}
	calls := []*call{
		{c: a, txs: txs("a0-", 2), hops: 1}, {c: b, txs: txs("b0-", 1), hops: 1},
		{c: a, txs: txs("a1-", 1), hops: 2}, {c: a, txs: txs("a2-", 3), hops: 1},
		{c: fail, txs: txs("f0-", 1), hops: 1}, {c: fail, txs: txs("f1-", 2), hops: 1},
		{c: short, txs: txs("s0-", 1), hops: 1}, {c: short, txs: txs("s1-", 1), hops: 1},
	}
	for _, cl := range calls {
		cl.fc = &forwardCall{ctx: context.Background(), c: cl.c, txs: cl.txs, hops: cl.hops, done: make(chan forwardResult, 1)}
		n.fwd.pending = append(n.fwd.pending, cl.fc)
	}
	n.fwd.scheduled = true
	n.flushForwards()
	for i, cl := range calls {
		r := <-cl.fc.done
		switch cl.c {
		case fail:
			if status.Code(r.err) != codes.Unavailable {
				t.Fatalf("call %d: err %v, want the RPC's", i, r.err)
			}
			continue
		case short:
			if status.Code(r.err) != codes.Internal {
				t.Fatalf("call %d: err %v, want Internal for a short answer", i, r.err)
			}
			continue
		}
		if r.err != nil || len(r.results) != len(cl.txs) {
			t.Fatalf("call %d: %d results, err %v", i, len(r.results), r.err)
		}
		for j, tx := range cl.txs {
			if h := sha256.Sum256(tx); !bytes.Equal(r.results[j].Hash, h[:]) {
				t.Fatalf("call %d: result %d is another tx's", i, j)
			}
		}
	}
	if len(a.reqs) != 1 || len(a.reqs[0].Txs) != 6 || a.reqs[0].Hops != 2 {
		t.Fatalf("leader a got %d requests (first: %d txs, hops %d), want 1 of 6 txs, hops 2", len(a.reqs), len(a.reqs[0].Txs), a.reqs[0].Hops)
	}
	var want [][]byte
	for _, i := range []int{0, 2, 3} {
		want = append(want, calls[i].txs...)
	}
	for j := range want {
		if !bytes.Equal(a.reqs[0].Txs[j], want[j]) {
			t.Fatalf("leader a: tx %d is %q, want %q", j, a.reqs[0].Txs[j], want[j])
		}
	}
	if len(b.reqs) != 1 || len(fail.reqs) != 1 || len(short.reqs) != 1 {
		t.Fatalf("requests: b %d, fail %d, short %d; want 1 each", len(b.reqs), len(fail.reqs), len(short.reqs))
	}
}

// TestForwardCallerLeaves: a caller whose context ends stops waiting; the
// forward still goes out for the others.
func TestForwardCallerLeaves(t *testing.T) {
	n := &Node{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stuck := &fakeLeader{block: make(chan struct{})}
	defer close(stuck.block)
	if _, err := n.forward(ctx, stuck, [][]byte{[]byte("x")}, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	a := &fakeLeader{}
	rs, err := n.forward(context.Background(), a, [][]byte{[]byte("y")}, 1)
	if err != nil || len(rs) != 1 {
		t.Fatalf("%d results, err %v", len(rs), err)
	}
}
