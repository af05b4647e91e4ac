package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fedtune/fedtune/internal/clock"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Bounds of the retry delay for a tx whose fate is unknown.
const (
	txRetryMin = time.Second
	txRetryMax = 30 * time.Second
)

// queuedTx is a transaction waiting for the tx worker, with the job
// generation that queued it.
type queuedTx struct {
	gen  uint64
	body ledger.TxBody
}

// txFate says what became of a queued transaction.
type txFate int

const (
	txCommitted txFate = iota // on the ledger at height
	txRejected                // refused by the ledger (err)
	txConflict                // refused because the ledger already holds the record: recover the job
	txWaiting                 // fate unknown, retrying: detail says since when
	txResumed                 // submitted again after txWaiting: clear detail if it is still the status
)

// txReport is one outcome the tx queue tells the driver.
type txReport struct {
	gen    uint64
	fate   txFate
	body   ledger.TxBody
	height uint64
	err    error
	detail string
}

// txQueue submits the machine's transactions one at a time, in the order
// they were queued, and reports each outcome.
//
// A tx whose fate is unknown because its signer's ledger connection (or the
// remote aggregator that signs it) is unreachable is retried, first after
// txRetryMin and then backing off to txRetryMax, for as long as it takes:
// the round cannot close without it, and the ledger deduplicates. While it
// waits, a txWaiting report says what it waits for.
type txQueue struct {
	mu    sync.Mutex
	queue []queuedTx
	wake  chan struct{}
}

func newTxQueue() *txQueue { return &txQueue{wake: make(chan struct{}, 1)} }

// push queues body for job generation gen.
func (q *txQueue) push(gen uint64, body ledger.TxBody) {
	q.mu.Lock()
	q.queue = append(q.queue, queuedTx{gen: gen, body: body})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop takes the first queued tx, or nil.
func (q *txQueue) pop() *queuedTx {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) == 0 {
		return nil
	}
	t := q.queue[0]
	q.queue = q.queue[1:]
	return &t
}

// requeue puts t back at the front.
func (q *txQueue) requeue(t queuedTx) {
	q.mu.Lock()
	q.queue = append([]queuedTx{t}, q.queue...)
	q.mu.Unlock()
}

// txWorker is what the queue's worker needs of the service.
type txWorker struct {
	clock   clock.Clock
	log     *slog.Logger
	current func(gen uint64) bool // whether gen is still the running job's
	submit  func(ctx context.Context, body ledger.TxBody) (uint64, error)
	report  func(ctx context.Context, r txReport)
}

// run submits queued transactions until ctx ends.
func (q *txQueue) run(ctx context.Context, w txWorker) {
	delay := txRetryMin
	var failingSince time.Time
	var waitDetail string // the detail the last failure reported
	for {
		t := q.pop()
		if t == nil {
			select {
			case <-ctx.Done():
				return
			case <-q.wake:
			}
			continue
		}
		if !w.current(t.gen) {
			continue // the job was reloaded or replaced
		}
		round := roundOfTx(t.body)
		h, err := w.submit(ctx, t.body)
		if ctx.Err() != nil {
			return
		}
		if err == nil || errors.Is(err, client.ErrRejected) {
			if !failingSince.IsZero() {
				w.log.InfoContext(ctx, "tx submitted after retries", "type", t.body.TxType(), "round", round, "waited", w.clock.Now().Sub(failingSince).Round(time.Second))
				w.report(ctx, txReport{gen: t.gen, fate: txResumed, body: t.body, detail: waitDetail})
			}
			delay, failingSince, waitDetail = txRetryMin, time.Time{}, ""
		}
		switch {
		case err == nil:
			w.log.InfoContext(ctx, "tx committed", "type", t.body.TxType(), "round", round, "height", h)
			w.report(ctx, txReport{gen: t.gen, fate: txCommitted, body: t.body, height: h})
		case errors.Is(err, client.ErrRejected) && historyConflict(err):
			// The ledger already holds this round's record: an earlier
			// run of this coordinator got further than the history it
			// recovered from showed.
			w.log.WarnContext(ctx, "the ledger is ahead of the job; recovering from it", "type", t.body.TxType(), "round", round, "err", err)
			w.report(ctx, txReport{gen: t.gen, fate: txConflict, body: t.body, err: err})
		case errors.Is(err, client.ErrRejected):
			w.log.WarnContext(ctx, "tx rejected", "type", t.body.TxType(), "round", round, "err", err)
			w.report(ctx, txReport{gen: t.gen, fate: txRejected, body: t.body, err: err})
		default:
			// Fate unknown and the ledger unreachable: try again later
			// (the ledger deduplicates; the nonce is re-read).
			if failingSince.IsZero() {
				failingSince = w.clock.Now()
			}
			w.log.WarnContext(ctx, "tx not submitted; retrying", "type", t.body.TxType(), "round", round, "retry_in", delay, "err", err)
			waitDetail = fmt.Sprintf("round %d: %s not submitted since %s (retrying every %s): %v",
				round, t.body.TxType(), failingSince.UTC().Format(time.RFC3339), delay, err)
			w.report(ctx, txReport{gen: t.gen, fate: txWaiting, body: t.body, err: err, detail: waitDetail})
			q.requeue(*t)
			select {
			case <-ctx.Done():
				return
			case <-w.clock.After(delay):
			}
			delay = min(2*delay, txRetryMax)
		}
	}
}

// historyConflict reports whether a rejection says the ledger already
// holds the record the tx would write (another run of this job wrote it).
func historyConflict(err error) bool {
	return errors.Is(err, ledger.ErrAlreadyExists) || errors.Is(err, ledger.ErrRoundNotOpen)
}

func roundOfTx(b ledger.TxBody) uint64 {
	switch b := b.(type) {
	case ledger.RoundOpened:
		return b.Round
	case ledger.UpdateRejected:
		return b.Round
	case ledger.RoundCommitted:
		return b.Round
	case ledger.RoundFailed:
		return b.Round
	case ledger.RoundEvaluated:
		return b.Round
	case ledger.SubmissionsClosed:
		return b.Round
	}
	return 0
}
