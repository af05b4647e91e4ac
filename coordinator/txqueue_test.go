package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/clock"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// waitWaiter returns once something waits on the fake clock.
func waitWaiter(c *clock.Fake) {
	for {
		added := c.Added()
		if c.Waiters() > 0 {
			return
		}
		<-added
	}
}

// The tx queue submits in order, retries a tx whose fate is unknown with a
// growing delay on its clock (no sleep here: the test moves the clock),
// and reports each outcome; txs of an older job generation are dropped.
func TestTxQueue(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := clock.NewFake(t0)
	q := newTxQueue()
	unreachable := 2
	var submitted []string
	reports := make(chan txReport, 16)
	w := txWorker{
		clock:   clk,
		log:     slog.New(slog.DiscardHandler),
		current: func(gen uint64) bool { return gen == 1 },
		submit: func(_ context.Context, body ledger.TxBody) (uint64, error) {
			submitted = append(submitted, fmt.Sprintf("%s/%d", body.TxType(), roundOfTx(body)))
			switch b := body.(type) {
			case ledger.RoundOpened:
				if unreachable > 0 {
					unreachable--
					return 0, errors.New("ledger unreachable")
				}
				return 7, nil
			case ledger.RoundFailed:
				if b.Round == 1 {
					return 0, &client.RejectedError{TxError: &ledger.TxError{Code: ledger.CodeInvalid, Msg: "no"}, Reason: "(invalid): no"}
				}
				return 0, &client.RejectedError{TxError: &ledger.TxError{Code: ledger.CodeAlreadyExists, Msg: "round exists"}, Reason: "round exists"}
			}
			return 0, errors.New("unexpected tx")
		},
		report: func(_ context.Context, r txReport) { reports <- r },
	}
	q.push(1, ledger.RoundOpened{JobID: "j", Round: 1})
	q.push(0, ledger.RoundOpened{JobID: "j", Round: 9}) // an older job's: dropped
	q.push(1, ledger.RoundFailed{JobID: "j", Round: 1})
	q.push(1, ledger.RoundFailed{JobID: "j", Round: 2})
	done := make(chan struct{})
	go func() { defer close(done); q.run(ctx, w) }()

	next := func(fate txFate, want string) txReport {
		t.Helper()
		r := <-reports
		if r.fate != fate || !strings.Contains(fmt.Sprint(r.detail, r.err, r.body.TxType()), want) {
			t.Fatalf("report %+v; want fate %d with %q", r, fate, want)
		}
		return r
	}
	next(txWaiting, "retrying every 1s")
	waitWaiter(clk)
	clk.Advance(txRetryMin)
	w2 := next(txWaiting, "retrying every 2s")
	waitWaiter(clk)
	clk.Advance(2 * txRetryMin)
	if r := next(txResumed, "RoundOpened"); r.detail != w2.detail {
		t.Fatalf("resumed detail %q, want the last waiting detail %q", r.detail, w2.detail)
	}
	if r := next(txCommitted, "RoundOpened"); r.height != 7 {
		t.Fatalf("committed at %d, want 7", r.height)
	}
	next(txRejected, "(invalid)")
	next(txConflict, "round exists")
	cancel()
	<-done
	want := "RoundOpened/1 RoundOpened/1 RoundOpened/1 RoundFailed/1 RoundFailed/2"
	if got := strings.Join(submitted, " "); got != want {
		t.Fatalf("submitted %s, want %s", got, want)
	}
}
