package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator/round"
	"github.com/fedtune/fedtune/ledger"
)

// sim drives a Machine against a simulated ledger, trainers and
// aggregator, all deterministic, ticking every 30 s.
type sim struct {
	t        *testing.T
	job      *Job
	m        *Machine
	trainers []string
	rounds   map[uint64]*ledger.Round
	pending  []ledger.TxBody
	due      map[string]time.Time // "round/trainer" → when its update arrives
	agg      *round.Task
	steps    int
	crashAt  int // crash after this many Steps (0: never)
	crashed  bool
	now      time.Time
	done     bool
}

func simDigest(parts ...any) string {
	sum := sha256.Sum256([]byte(fmt.Sprint(parts...)))
	return hex.EncodeToString(sum[:])
}

func (s *sim) step(ev Event) {
	if s.crashed || s.done {
		return
	}
	rd, err := s.m.Step(ev)
	if err != nil {
		s.t.Fatalf("step %d %T: %v", s.steps, ev, err)
	}
	s.steps++
	s.pending = append(s.pending, rd.Txs...)
	for _, tk := range rd.Tasks {
		key := fmt.Sprintf("%d/%s", tk.Round, tk.Trainer)
		if _, ok := s.due[key]; ok {
			continue // already training
		}
		i := slices.Index(s.trainers, tk.Trainer)
		if tk.Round == 2 && i == 2 {
			continue // the third trainer never delivers in round 2
		}
		s.due[key] = s.now.Add(time.Duration(i+1) * time.Minute)
	}
	if rd.Aggregation != nil {
		s.agg = rd.Aggregation
	}
	if rd.Done != nil {
		s.done = true
	}
	if s.crashAt > 0 && s.steps == s.crashAt {
		// The coordinator dies: what it had not yet submitted is lost, as is
		// a running aggregation.
		s.crashed = true
		s.pending, s.agg = nil, nil
	}
}

func (s *sim) restart() {
	var hist []ledger.Round
	for _, r := range s.rounds {
		hist = append(hist, *r)
	}
	m, err := Recover(Config{Job: s.job}, hist)
	if err != nil {
		s.t.Fatal(err)
	}
	s.m, s.crashed, s.crashAt = m, false, 0
	s.step(MembersChanged{Trainers: s.trainers})
	for _, t := range s.trainers {
		s.step(TrainerJoined{Trainer: t, Datasets: []string{simDigest("ds", t)}})
	}
	s.step(JobStarted{Now: s.now})
}

// run plays the job to its end and returns the ledger's rounds.
func (s *sim) run() []ledger.Round {
	s.step(MembersChanged{Trainers: s.trainers})
	for _, t := range s.trainers {
		s.step(TrainerJoined{Trainer: t, Datasets: []string{simDigest("ds", t)}})
	}
	s.now = t0
	s.step(JobStarted{Now: s.now})
	for tick := 0; !s.done && tick < 1000; tick++ {
		if s.crashed {
			s.restart()
		}
		// The ledger applies what was submitted and confirms it.
		for len(s.pending) > 0 && !s.crashed {
			tx := s.pending[0]
			s.pending = s.pending[1:]
			s.apply(tx)
			s.step(TxCommitted{Type: tx.TxType(), Round: txRound(tx)})
		}
		// A running aggregation finishes within a tick.
		if a := s.agg; a != nil && !s.crashed {
			s.agg = nil
			w := map[string]float64{}
			var digests []string
			for _, in := range a.Inputs {
				w[in.Trainer] = 1 / float64(len(a.Inputs))
				digests = append(digests, in.Digest)
			}
			s.step(AggregationDone{Round: a.Round, Model: simDigest("model", a.Base, digests), State: simDigest("state", a.State, digests), Weights: w})
			continue
		}
		// Trainers whose update is due submit it (the ledger refuses late ones).
		for _, key := range slices.Sorted(mapsKeys(s.due)) {
			var round uint64
			var tr string
			fmt.Sscanf(key, "%d/%s", &round, &tr)
			r := s.rounds[round]
			if s.due[key].After(s.now) || r == nil || r.Status != ledger.StatusOpen || s.now.After(r.Deadline) {
				continue
			}
			delete(s.due, key)
			u := ledger.Update{Trainer: tr, UpdateDigest: simDigest("update", round, tr), DatasetDigest: simDigest("ds", tr), Samples: 100}
			r.Updates = append(r.Updates, u)
			s.step(UpdateArrived{Round: round, Trainer: tr, Digest: u.UpdateDigest, Dataset: u.DatasetDigest, Samples: u.Samples})
		}
		s.now = s.now.Add(30 * time.Second)
		s.step(Tick{Now: s.now})
	}
	if !s.done {
		s.t.Fatal("the job did not finish")
	}
	var out []ledger.Round
	for n := uint64(1); s.rounds[n] != nil; n++ {
		out = append(out, *s.rounds[n])
	}
	return out
}

func mapsKeys(m map[string]time.Time) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (s *sim) apply(tx ledger.TxBody) {
	switch b := tx.(type) {
	case ledger.RoundOpened:
		s.rounds[b.Round] = &ledger.Round{JobID: b.JobID, Round: b.Round, ConfigDigest: b.ConfigDigest, BaseModel: b.BaseModel,
			Strategy: b.Strategy, Trainers: b.Trainers, Deadline: b.Deadline, Status: ledger.StatusOpen}
	case ledger.RoundCommitted:
		r := s.rounds[b.Round]
		r.Status, r.ModelDigest, r.Params, r.Contributors = ledger.StatusCommitted, b.ModelDigest, b.Params, b.Contributors
	case ledger.RoundFailed:
		r := s.rounds[b.Round]
		r.Status, r.FailReason = ledger.StatusFailed, b.Reason
	}
}

// TestRecoverAnywhere crashes the coordinator after every single Step of
// a three-round job (with a round that waits for its deadline) and
// restarts it with Recover: the ledger ends exactly as in the
// uninterrupted run.
func TestRecoverAnywhere(t *testing.T) {
	job, err := ParseJob("sim.yaml", []byte(minimalJob+"seed: 5\nrounds: 3\ntrainers: {min: 2}\ndeadline: 10m\nstrategy: {name: fedadam}\n"))
	if err != nil {
		t.Fatal(err)
	}
	newSim := func(crashAt int) *sim {
		m, err := New(Config{Job: job})
		if err != nil {
			t.Fatal(err)
		}
		return &sim{t: t, job: job, m: m, rounds: map[uint64]*ledger.Round{}, due: map[string]time.Time{}, crashAt: crashAt,
			trainers: []string{simDigest("t", 1), simDigest("t", 2), simDigest("t", 3)}}
	}
	ref := newSim(0)
	want := ref.run()
	if len(want) != 3 || want[2].Status != ledger.StatusCommitted || len(want[1].Contributors) != 2 {
		t.Fatalf("reference run: %+v", want)
	}
	wantNoDeadline := slices.Clone(want)
	for i := range wantNoDeadline {
		wantNoDeadline[i].Deadline = time.Time{}
	}
	for k := 1; k < ref.steps; k++ {
		got := newSim(k).run()
		// A round whose RoundOpened was lost in the crash opens when the
		// coordinator is back, a tick later: its deadline may be later.
		// Everything else must be identical.
		for i := range got {
			if i < len(want) && got[i].Deadline.Before(want[i].Deadline) {
				t.Fatalf("crash after step %d: round %d deadline %v before %v", k, i+1, got[i].Deadline, want[i].Deadline)
			}
			got[i].Deadline = time.Time{}
		}
		if !reflect.DeepEqual(got, wantNoDeadline) {
			t.Fatalf("crash after step %d of %d: ledger differs\ngot  %+v\nwant %+v", k, ref.steps, got, want)
		}
	}
	t.Logf("crashed at each of %d steps; every run recorded the same 3 rounds", ref.steps-1)
}
