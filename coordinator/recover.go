package coordinator

import (
	"fmt"
	"slices"

	"github.com/fedtune/fedtune/aggregator/round"
	"github.com/fedtune/fedtune/ledger"
)

// Recover rebuilds a machine for cfg.Job from the job's rounds as the
// ledger records them (fsm.FSM.Round for rounds 1, 2, … with their
// updates; rounds of other jobs are ignored), so a restarted coordinator
// continues where it stopped. Send JobStarted next, as to a new machine.
//
// Closed rounds are replayed: a committed round's model becomes the base
// and its "server_state" parameter the server state. An open round (only
// the last may be open) is re-collected: its selected trainers and
// deadline stand, the updates already on the ledger count as arrived (the
// rejected ones as invalid), trainers that rejoin get their task again,
// and the usual quorum rule applies at the first event: if its deadline
// has passed while the coordinator was down, the round aggregates the
// updates the ledger holds when they reach trainers.min, and fails
// otherwise. An aggregation that was running is started again; the
// aggregation is deterministic, so it yields the same model. An open round
// whose submissions were closed (a job with verify) awaits its draw and
// verdicts again, its verify timeout counted from the restart.
//
// Every round must carry the job's config digest: a job file changed
// since the rounds were opened is refused (ErrHistory), as is a history
// with gaps, a second open round, or a base model that does not follow.
func Recover(cfg Config, history []ledger.Round) (*Machine, error) {
	m, err := New(cfg)
	if err != nil {
		return nil, err
	}
	var rounds []ledger.Round
	for _, r := range history {
		if r.JobID == m.job.Name {
			rounds = append(rounds, r)
		}
	}
	slices.SortFunc(rounds, func(a, b ledger.Round) int {
		switch {
		case a.Round < b.Round:
			return -1
		case a.Round > b.Round:
			return 1
		}
		return 0
	})
	for i, r := range rounds {
		if r.Round != uint64(i+1) {
			return nil, fmt.Errorf("%w: job %s: round %d follows round %d", ErrHistory, m.job.Name, r.Round, i)
		}
		if r.Round > uint64(m.job.Rounds) {
			return nil, fmt.Errorf("%w: job %s has round %d but the job runs %d rounds", ErrHistory, m.job.Name, r.Round, m.job.Rounds)
		}
		if r.ConfigDigest != m.jobDigest {
			return nil, fmt.Errorf("%w: job %s round %d was opened with config %s, the job file now has %s (changed since?)",
				ErrHistory, m.job.Name, r.Round, r.ConfigDigest, m.jobDigest)
		}
		if r.BaseModel != m.base {
			return nil, fmt.Errorf("%w: job %s round %d started from %s, expected %s", ErrHistory, m.job.Name, r.Round, r.BaseModel, m.base)
		}
		m.round = r.Round
		switch r.Status {
		case ledger.StatusCommitted:
			m.base, m.srvState = r.ModelDigest, r.Params[ParamServerState]
			m.committed++
			m.round++
		case ledger.StatusFailed:
			m.failed++
			m.round++
		case ledger.StatusOpen:
			if i != len(rounds)-1 {
				return nil, fmt.Errorf("%w: job %s round %d is open but round %d follows it", ErrHistory, m.job.Name, r.Round, r.Round+1)
			}
			m.resume(r)
		default:
			return nil, fmt.Errorf("%w: job %s round %d has status %q", ErrHistory, m.job.Name, r.Round, r.Status)
		}
	}
	return m, nil
}

// resume puts the machine into the open round r, collecting.
func (m *Machine) resume(r ledger.Round) {
	rs := &roundState{selected: slices.Clone(r.Trainers), deadline: r.Deadline, updates: map[string]*update{},
		failed: map[string]string{}, left: map[string]bool{}, tasked: map[string]bool{}}
	// Selected trainers count as present (not left) until a TrainerLeft
	// says otherwise: the round waits for them up to its deadline, as it
	// would have without the restart.
	slices.Sort(rs.selected)
	for _, u := range r.Updates {
		if !slices.Contains(rs.selected, u.Trainer) {
			continue
		}
		up := &update{Input: round.Input{Trainer: u.Trainer, Digest: u.UpdateDigest, Dataset: u.DatasetDigest, Samples: u.Samples}}
		if u.Rejected {
			up.invalid = u.RejectReason
			if up.invalid == "" {
				up.invalid = "rejected"
			}
		}
		rs.updates[u.Trainer] = up
	}
	m.cur = rs
	m.st = stCollecting
	if r.SubmissionsClosedHeight != 0 && m.recipe.Verify != nil {
		// The submissions were closed: the round awaits its draw and
		// verdicts (again, from the ledger), with the updates the ledger
		// holds not rejected; the verify timeout counts from the restart.
		for _, t := range rs.selected {
			if u := rs.updates[t]; u != nil && u.invalid == "" {
				rs.checked = append(rs.checked, u.Input)
			}
		}
		rs.verdicts = map[string]string{}
		m.st = stVerifying
	}
}
