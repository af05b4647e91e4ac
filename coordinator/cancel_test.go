package coordinator

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// cancelStep steps m and fails on an error.
func cancelStep(t *testing.T, m *Machine, ev Event) Ready {
	t.Helper()
	rd, err := m.Step(ev)
	if err != nil {
		t.Fatalf("%T: %v", ev, err)
	}
	return rd
}

// A Cancel asks for one JobCancelled and nothing else; while it is in
// flight the round's other events (a draw, verdicts, a late aggregation,
// ticks) submit nothing; once it lands the job is done, cancelled, and
// the round's trainers are told. Whichever of a round's close and the
// cancel the ledger takes first counts, the other does not.
func TestMachineCancel(t *testing.T) {
	model := strings.Repeat("7", 64)
	for _, tc := range []struct {
		name string
		// before drives the machine (verifying round 1) to where the
		// cancel arrives; between are the events after it, before the
		// JobCancelled lands.
		before, between []Event
		committed       int
		failedRound     uint64
	}{
		{name: "after the submissions closed, before the draw",
			between: []Event{DrawFixed{Round: 1}, Tick{Now: t0}}, failedRound: 1},
		{name: "while aggregating: the late aggregation is dropped",
			before:      []Event{DrawFixed{Round: 1}},
			between:     []Event{AggregationDone{Round: 1, Model: model, Weights: map[string]float64{}}},
			failedRound: 1},
		{name: "racing a commit that lands first",
			before:    []Event{DrawFixed{Round: 1}, aggregated(model)},
			between:   []Event{TxCommitted{Type: ledger.TypeRoundCommitted, Round: 1}},
			committed: 1},
		{name: "racing a commit the ledger refuses",
			before:      []Event{DrawFixed{Round: 1}, aggregated(model)},
			between:     []Event{TxRejected{Type: ledger.TypeRoundCommitted, Round: 1, Reason: "round 1 failed at height 9: job cancelled: x"}},
			failedRound: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ts, _, _ := verifyMachine(t, "")
			for _, ev := range tc.before {
				cancelStep(t, m, ev)
			}
			if _, err := m.Step(Cancel{}); !errors.Is(err, ErrBadEvent) || m.Cancelling() {
				t.Fatalf("a cancel without a reason: %v, cancelling %v", err, m.Cancelling())
			}
			rd := cancelStep(t, m, Cancel{Reason: "wrong network"})
			if c, ok := singleTx(rd).(ledger.JobCancelled); !ok || c.JobID != "spot" || c.Reason != "wrong network" || rd.Done != nil {
				t.Fatalf("cancel: %+v; want one JobCancelled", rd)
			}
			if _, err := m.Step(Cancel{Reason: "again"}); !errors.Is(err, ErrUnexpectedEvent) {
				t.Fatalf("a second cancel: %v", err)
			}
			for _, ev := range tc.between {
				if rd := cancelStep(t, m, ev); !rd.Empty() {
					t.Fatalf("%T while cancelling: %+v; want nothing", ev, rd)
				}
			}
			rd = cancelStep(t, m, TxCommitted{Type: ledger.TypeJobCancelled})
			d := rd.Done
			if d == nil || !d.Cancelled || d.Committed != tc.committed || d.CancelledRound != tc.failedRound || !strings.Contains(d.Err, "wrong network") || len(rd.Txs) != 0 {
				t.Fatalf("cancel landed: %+v (done %+v); want cancelled, %d committed, round %d failed", rd, d, tc.committed, tc.failedRound)
			}
			if tc.failedRound != 0 {
				if e := rd.Ended; e == nil || e.Round != 1 || !slices.Equal(e.Trainers, ts) || !strings.HasPrefix(e.Reason, ledger.CancelledPrefix) {
					t.Fatalf("round end %+v; want round 1's trainers %v", rd.Ended, ts)
				}
			} else if rd.Ended != nil {
				t.Fatalf("round end %+v with no round open", rd.Ended)
			}
			if _, err := m.Step(Cancel{Reason: "late"}); !errors.Is(err, ErrJobDone) {
				t.Fatalf("a cancel after the end: %v", err)
			}
		})
	}
}

// aggregated is the aggregation of round 1 of verifyMachine with no draw.
func aggregated(model string) AggregationDone {
	w := map[string]float64{}
	for _, c := range "123" {
		w[strings.Repeat(string(c), 64)] = 1.0 / 3
	}
	return AggregationDone{Round: 1, Model: model, Weights: w}
}

// A JobCancelled the ledger refuses ends the job with the ledger's reason,
// not as cancelled.
func TestMachineCancelRefused(t *testing.T) {
	m, _, _, _ := verifyMachine(t, "")
	cancelStep(t, m, Cancel{Reason: "x"})
	rd := cancelStep(t, m, TxRejected{Type: ledger.TypeJobCancelled, Reason: "job spot was already cancelled at height 4"})
	if d := rd.Done; d == nil || d.Cancelled || !strings.Contains(d.Err, "already cancelled") || !m.Done() {
		t.Fatalf("refused cancel: %+v", rd)
	}
}
