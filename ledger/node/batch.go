package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/ledger/fsm"
)

// pendingTx is one transaction waiting in the leader's queue or in a raft
// proposal, with the channel its submitter waits on.
type pendingTx struct {
	env  []byte
	hash [32]byte
	done chan *ledgerv1.TxResult // buffered 1
}

// errNotLeader marks a local submission that found this node not leading.
var errNotLeader = errors.New("not the leader")

// submitLocal queues txs on this node, which must be the leader, and waits
// for each one's result. Stateless checks and already-committed txs are
// answered at once.
//
// decoded[i], when set, is txs[i] as fsm.FSM.Admit returned it (the
// Submit handler admits every tx first); a tx without one is admitted here.
// Either way no tx enters a proposal that Admit refuses.
func (n *Node) submitLocal(ctx context.Context, txs [][]byte, decoded []*ledger.Tx) ([]*ledgerv1.TxResult, error) {
	if n.raft.State() != raft.Leader {
		return nil, errNotLeader
	}
	results := make([]*ledgerv1.TxResult, len(txs))
	waits := make([]*pendingTx, len(txs))
	for i, env := range txs {
		h := ledger.TxHash(env)
		if r := n.committed(h); r != nil {
			results[i] = r
			continue
		}
		// The checks that need no next block (fsm.FSM.Admit); the
		// decoding is handed to the FSM, which then need not decode the tx
		// again when it applies it, nor verify its signature again while
		// the signer keeps the key Admit verified it with.
		var tx *ledger.Tx
		if i < len(decoded) && decoded[i] != nil {
			tx = decoded[i]
		} else {
			var err error
			if tx, err = n.fsm.Admit(env); err != nil {
				var te *ledger.TxError
				if errors.As(err, &te) {
					n.metrics.refused.WithLabelValues("tx_" + string(te.Code)).Inc()
				}
				n.metrics.txsRejected.Inc()
				results[i] = rejected(h, err)
				continue
			}
		}
		n.fsm.NoteDecoded(tx)
		p := &pendingTx{env: env, hash: h, done: make(chan *ledgerv1.TxResult, 1)}
		n.mu.Lock()
		first := len(n.waiting[h]) == 0
		n.waiting[h] = append(n.waiting[h], p)
		n.mu.Unlock()
		waits[i] = p
		if !first {
			continue // the same tx is already queued or in flight
		}
		select {
		case n.queue <- p:
		case <-ctx.Done():
			n.finish(h, unknown(h, ctx.Err()))
		case <-n.done:
			n.finish(h, unknown(h, ErrStopped))
		}
	}
	for i, p := range waits {
		if p == nil {
			continue
		}
		select {
		case r := <-p.done:
			results[i] = r
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return results, nil
}

// committed returns a COMMITTED result if the tx is already on the chain.
func (n *Node) committed(h [32]byte) *ledgerv1.TxResult {
	rec, err := n.fsm.Tx(h)
	if err != nil || rec == nil {
		return nil
	}
	return &ledgerv1.TxResult{Hash: h[:], Status: ledgerv1.TxStatus_TX_STATUS_COMMITTED, Height: rec.Height}
}

// finish delivers r to every submitter waiting on tx h.
func (n *Node) finish(h [32]byte, r *ledgerv1.TxResult) {
	n.mu.Lock()
	ws := n.waiting[h]
	delete(n.waiting, h)
	n.mu.Unlock()
	for _, p := range ws {
		p.done <- r
	}
}

func rejected(h [32]byte, err error) *ledgerv1.TxResult {
	r := &ledgerv1.TxResult{Hash: h[:], Status: ledgerv1.TxStatus_TX_STATUS_REJECTED, Reason: err.Error()}
	var te *ledger.TxError
	if errors.As(err, &te) {
		r.Code = string(te.Code)
		r.Error = client.TxErrorProto(te)
	}
	return r
}

func unknown(h [32]byte, err error) *ledgerv1.TxResult {
	return &ledgerv1.TxResult{Hash: h[:], Status: ledgerv1.TxStatus_TX_STATUS_UNKNOWN, Reason: err.Error()}
}

// batchLoop gathers queued txs into proposals bounded by the genesis
// policy (MaxBlockTxs, MaxBlockBytes, BlockInterval) and hands each to
// propose. Up to cap(n.inflight) proposals are in raft at once. While a
// proposal is in flight a new batch waits up to BlockInterval to fill;
// when raft is idle, what is queued is proposed at once, so a lone
// submitter does not wait for the interval.
func (n *Node) batchLoop(ctx context.Context) {
	pol := n.genesis.Policy
	maxTxs, maxBytes := pol.MaxBlockTxs, pol.MaxBlockBytes
	if maxTxs <= 0 {
		maxTxs = 1000
	}
	var carry *pendingTx
	for {
		var first *pendingTx
		if carry != nil {
			first, carry = carry, nil
		} else {
			select {
			case <-ctx.Done():
				n.drain()
				return
			case first = <-n.queue:
			}
		}
		batch := []*pendingTx{first}
		size := len(first.env)
		var timeout <-chan time.Time
		var timer *time.Timer
		if pol.BlockInterval > 0 {
			timer = time.NewTimer(pol.BlockInterval)
			timeout = timer.C
		}
	collect:
		for len(batch) < maxTxs {
			var p *pendingTx
			if timeout == nil {
				select {
				case p = <-n.queue:
				default:
					break collect
				}
			} else {
				select {
				case p = <-n.queue:
				default:
					// Nothing more queued right now. With no proposal in
					// raft there is nothing to overlap with: propose at
					// once rather than idle for the rest of the interval.
					if len(n.inflight) == 0 {
						break collect
					}
					select {
					case p = <-n.queue:
					case <-timeout:
						break collect
					case <-ctx.Done():
						break collect
					}
				}
			}
			if maxBytes > 0 && size+len(p.env) > maxBytes {
				carry = p
				break
			}
			batch = append(batch, p)
			size += len(p.env)
		}
		if timer != nil {
			timer.Stop()
		}
		select {
		case n.inflight <- struct{}{}:
		case <-ctx.Done():
			for _, p := range batch {
				n.finish(p.hash, unknown(p.hash, ErrStopped))
			}
			if carry != nil {
				n.finish(carry.hash, unknown(carry.hash, ErrStopped))
			}
			n.drain()
			return
		}
		n.propose(batch)
	}
}

// drain answers every queued tx with UNKNOWN when the node stops.
func (n *Node) drain() {
	for {
		select {
		case p := <-n.queue:
			n.finish(p.hash, unknown(p.hash, ErrStopped))
		default:
			return
		}
	}
}

// propose appends one proposal to the raft log and, in the background,
// answers its txs when raft has applied it.
func (n *Node) propose(batch []*pendingTx) {
	txs := make([][]byte, len(batch))
	for i, p := range batch {
		txs[i] = p.env
	}
	data := ledger.EncodeProposal(ledger.SignProposal(n.key, n.genesis.ChainID, ledger.Proposal{Time: time.Now().UnixNano(), Txs: txs}))
	start := time.Now()
	f := n.raft.Apply(data, n.opts.ApplyTimeout)
	go func() {
		defer func() { <-n.inflight }()
		err := f.Error()
		n.metrics.applyLatency.Observe(time.Since(start).Seconds())
		if err != nil {
			// ErrLeadershipLost, ErrNotLeader, timeouts: the entry may or may
			// not commit. The FSM deduplicates by hash, so a resubmit is safe.
			if errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrNotLeader) {
				err = fmt.Errorf("fate unknown, resubmit: %w", err)
			}
			for _, p := range batch {
				n.finish(p.hash, unknown(p.hash, err))
			}
			return
		}
		n.answer(batch, f.Response())
	}()
}

// answer maps an FSM apply result onto the batch's submitters.
func (n *Node) answer(batch []*pendingTx, resp any) {
	res, ok := resp.(*fsm.ApplyResult)
	if !ok {
		err, _ := resp.(error)
		if err == nil {
			err = fmt.Errorf("unexpected FSM response %T", resp)
		}
		n.log.Error("proposal not applied", "err", err)
		for _, p := range batch {
			n.metrics.txsRejected.Inc()
			n.finish(p.hash, rejected(p.hash, err))
		}
		return
	}
	if res.Err != nil {
		// The entry as a whole was not applied (or the store failed, or the
		// FSM refused the proposal); no tx of it is on the chain.
		if why := fsm.ProposalRefusalReason(res.Err); why != "" {
			n.metrics.refused.WithLabelValues("proposal_" + why).Inc()
		}
		n.log.Error("proposal not applied", "err", res.Err)
		for _, p := range batch {
			n.finish(p.hash, unknown(p.hash, res.Err))
		}
		return
	}
	byHash := make(map[[32]byte]error, len(res.Results))
	for _, r := range res.Results {
		if _, seen := byHash[r.Hash]; !seen {
			byHash[r.Hash] = r.Err
		}
	}
	for _, p := range batch {
		err, found := byHash[p.hash]
		switch {
		case found && err == nil && res.Block != nil:
			n.finish(p.hash, &ledgerv1.TxResult{Hash: p.hash[:], Status: ledgerv1.TxStatus_TX_STATUS_COMMITTED, Height: res.Block.Header.Height})
		case errors.Is(err, ledger.ErrDuplicate):
			// Already on the chain (an earlier proposal of it committed).
			if r := n.committed(p.hash); r != nil {
				n.finish(p.hash, r)
			} else {
				n.metrics.txsRejected.Inc()
				n.finish(p.hash, rejected(p.hash, err))
			}
		case found && err != nil:
			n.metrics.txsRejected.Inc()
			n.finish(p.hash, rejected(p.hash, err))
		default:
			n.finish(p.hash, unknown(p.hash, errors.New("no result from the FSM")))
		}
	}
}
