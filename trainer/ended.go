package trainer

import (
	"context"
	"sync"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
)

// maxEndedRounds bounds the ended rounds a session remembers.
const maxEndedRounds = 64

type roundRef struct {
	job   string
	round uint64
}

// endedRounds stops the work of rounds the coordinator says ended
// (Task.ended, sent when a job is cancelled): the task in progress of
// such a round is cancelled, and a queued one is skipped. Safe for
// concurrent use.
type endedRounds struct {
	mu    sync.Mutex
	ended map[roundRef]string // reason
	cur   roundRef
	stop  context.CancelFunc
}

// start returns the context to run task t in, or skip when its round has
// ended; call done when the task is over.
func (e *endedRounds) start(ctx context.Context, t *coordinatorv1.Task) (tctx context.Context, skip string, done func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ref := roundRef{t.JobId, t.Round}
	if why, ok := e.ended[ref]; ok {
		return nil, why, func() {}
	}
	tctx, cancel := context.WithCancel(ctx)
	e.cur, e.stop = ref, cancel
	return tctx, "", func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		cancel()
		e.cur, e.stop = roundRef{}, nil
	}
}

// end records that job's round ended and reports whether it stopped the
// task in progress.
func (e *endedRounds) end(m *coordinatorv1.RoundEnded) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended == nil || len(e.ended) >= maxEndedRounds {
		e.ended = map[roundRef]string{}
	}
	ref := roundRef{m.JobId, m.Round}
	e.ended[ref] = m.Reason
	if e.stop != nil && e.cur == ref {
		e.stop()
		return true
	}
	return false
}
