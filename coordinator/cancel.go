package coordinator

import (
	"fmt"
	"slices"

	"github.com/fedtune/fedtune/ledger"
)

// Cancel stops the job before its last round (`fedtune round cancel`): the
// machine asks for a ledger.JobCancelled with Reason, which the ledger
// records once and which fails the job's open round. While it awaits the
// outcome, the machine takes only the outcomes of the txs it submitted
// before (a RoundCommitted that lands first still counts) and ignores
// every other event (a late aggregation, updates, ticks); nothing new is
// submitted. TxCommitted of the JobCancelled ends the job (Ready.Done with
// Cancelled set) and tells the open round's selected trainers it ended
// (Ready.Ended); TxRejected ends it with the ledger's reason (Cancelled
// unset: the ledger did not record it).
type Cancel struct{ Reason string }

func (Cancel) isEvent() {}

// RoundEnd tells trainers that a round ended before they submitted.
type RoundEnd struct {
	Round    uint64
	Trainers []string
	Reason   string
}

// Cancelling reports whether the machine awaits its JobCancelled.
func (m *Machine) Cancelling() bool { return m.st == stCancelling }

// cancel applies Cancel.
func (m *Machine) cancel(e Cancel) error {
	if m.st == stCancelling {
		return unexpected(e, "the job is already being cancelled (%s)", m.cancelReason)
	}
	if e.Reason == "" {
		return malformed(e, "no reason")
	}
	m.st, m.cancelReason = stCancelling, e.Reason
	m.waiting = ""
	m.rd.Txs = append(m.rd.Txs, ledger.JobCancelled{JobID: m.job.Name, Reason: e.Reason})
	return nil
}

// cancellingEvent applies an event while the machine awaits its
// JobCancelled: the outcome of a tx submitted before it is accounted for;
// every other event is ignored.
func (m *Machine) cancellingEvent(ev Event) error {
	switch e := ev.(type) {
	case Cancel:
		return m.cancel(e)
	case TxCommitted:
		switch {
		case e.Type == ledger.TypeJobCancelled:
			failed, failedRound := "", uint64(0)
			if r := m.cur; r != nil {
				// The ledger failed the open round (one whose RoundOpened
				// landed before the cancellation, which follows it in
				// the queue).
				m.failed++
				failed, failedRound = fmt.Sprintf("; round %d failed", m.round), m.round
				m.rd.Ended = &RoundEnd{Round: m.round, Trainers: slices.Clone(r.selected), Reason: ledger.CancelledPrefix + m.cancelReason}
				m.cur = nil
			}
			m.st = stDone
			m.rd.Done = &JobResult{Committed: m.committed, Failed: m.failed, Model: m.base, Cancelled: true,
				CancelledRound: failedRound, Err: fmt.Sprintf("cancelled: %s%s", m.cancelReason, failed)}
		case m.cur != nil && e.Round == m.round && m.cur.closing != nil && e.Type == m.cur.closing.TxType():
			// The round's close landed before the cancellation.
			m.closeLanded(e.Type)
		}
	case TxRejected:
		switch {
		case e.Type == ledger.TypeJobCancelled:
			m.st = stDone
			m.rd.Done = &JobResult{Committed: m.committed, Failed: m.failed, Model: m.base,
				Err: fmt.Sprintf("cancel (%s): the ledger refused JobCancelled: %s; the coordinator stopped driving the job", m.cancelReason, e.Reason)}
		case e.Type == ledger.TypeRoundOpened && m.cur != nil && e.Round == m.round:
			m.cur = nil // no round is open
		}
	}
	return nil
}
