package coordinator

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// verifyMachine is a machine of a job with verify on published data, its
// round 1 open and three trainers' updates arrived.
func verifyMachine(t *testing.T, extra string) (*Machine, []string, []string, time.Time) {
	t.Helper()
	pub, base, v := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("e", 64)
	j, err := ParseJob("job.yaml", []byte(`name: spot
seed: 3
model:
  digest: `+base+`
datasets:
  published: [`+pub+`]
  range_samples: 4
rounds: 2
trainers:
  min: 2
deadline: 10m
verify:
  fraction: 1
  by: [`+v+`]
  suspend_rounds: 2
`+extra))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := j.Recipe([]string{strings.Repeat("c", 64)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if rc.Verify == nil || rc.Verify.Fraction != 1 || rc.Verify.By[0] != v || rc.Verify.SuspendRounds != 2 {
		t.Fatalf("recipe verify %+v", rc.Verify)
	}
	rc.Published[0].Samples = 30
	m, err := New(Config{Job: j, Recipe: rc})
	if err != nil {
		t.Fatal(err)
	}
	ts := []string{strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64)}
	us := []string{strings.Repeat("4", 64), strings.Repeat("5", 64), strings.Repeat("6", 64)}
	now := time.Unix(1000, 0)
	step := func(ev Event) Ready {
		t.Helper()
		rd, err := m.Step(ev)
		if err != nil {
			t.Fatalf("%T: %v", ev, err)
		}
		return rd
	}
	step(MembersChanged{Trainers: ts})
	for _, tr := range ts {
		step(TrainerJoined{Trainer: tr})
	}
	// A job with verify reads the ledger's suspensions before it opens a
	// round.
	if rd := step(JobStarted{Now: now}); rd.ReadSuspensions != 1 || len(rd.Txs) != 0 {
		t.Fatalf("start: %+v; want a read of the suspensions for round 1 and no RoundOpened yet", rd)
	}
	if rd := step(Tick{Now: now}); rd.ReadSuspensions != 0 || len(rd.Txs) != 0 {
		t.Fatalf("tick while reading: %+v; want nothing (asked once)", rd)
	}
	if rd := step(SuspensionsRead{Round: 1}); len(rd.Txs) != 1 {
		t.Fatalf("after the read: %+v; want RoundOpened", rd)
	}
	step(TxCommitted{Type: ledger.TypeRoundOpened, Round: 1})
	var rd Ready
	for i, tr := range ts {
		rd = step(UpdateArrived{Round: 1, Trainer: tr, Digest: us[i], Dataset: pub, Samples: 4})
	}
	// Every trainer answered: the machine closes the submissions instead
	// of aggregating.
	if rd.Aggregation != nil || len(rd.Txs) != 1 {
		t.Fatalf("after the last update: %+v", rd)
	}
	if sc, ok := rd.Txs[0].(ledger.SubmissionsClosed); !ok || sc.Round != 1 || sc.JobID != "spot" {
		t.Fatalf("tx %+v", rd.Txs[0])
	}
	if !m.Verifying(1) {
		t.Fatal("not verifying")
	}
	rd = step(TxCommitted{Type: ledger.TypeSubmissionsClosed, Round: 1})
	if rd.Aggregation != nil || len(rd.Txs) != 0 {
		t.Fatalf("after the close: %+v", rd)
	}
	return m, ts, us, now
}

func TestMachineVerify(t *testing.T) {
	m, ts, us, _ := verifyMachine(t, "")
	rd, err := m.Step(UpdateVerdict{Round: 1, Trainer: ts[0], Passed: true})
	if err != nil || rd.Aggregation != nil {
		t.Fatalf("a verdict before the draw: %+v, %v", rd, err)
	}
	if rd, err = m.Step(DrawFixed{Round: 1, Drawn: ts[:2]}); err != nil || rd.Aggregation != nil {
		t.Fatalf("the draw: %+v, %v", rd, err)
	}
	if _, err := m.Step(UpdateVerdict{Round: 1, Trainer: ts[1], Reason: ""}); err == nil {
		t.Fatal("a rejection without a reason was taken")
	}
	rd, err = m.Step(UpdateVerdict{Round: 1, Trainer: ts[1], Reason: "step 2 differs"})
	if err != nil {
		t.Fatal(err)
	}
	// t1 passed, t2 rejected, t3 not drawn: t1 and t3 aggregate.
	a := rd.Aggregation
	if a == nil || len(a.Inputs) != 2 || a.Inputs[0].Trainer != ts[0] || a.Inputs[1].Trainer != ts[2] || a.Inputs[1].Digest != us[2] {
		t.Fatalf("aggregation %+v", rd)
	}
	if m.Verifying(1) {
		t.Fatal("still verifying")
	}
	// The round commits; round 2 leaves out t2, suspended for 2 rounds.
	rd, err = m.Step(AggregationDone{Round: 1, Model: strings.Repeat("7", 64), Weights: map[string]float64{ts[0]: 0.5, ts[2]: 0.5}})
	if err != nil || len(rd.Txs) != 1 {
		t.Fatalf("aggregation done: %+v, %v", rd, err)
	}
	if rd, err = m.Step(TxCommitted{Type: ledger.TypeRoundCommitted, Round: 1}); err != nil || len(rd.Txs) != 0 || rd.ReadSuspensions != 2 {
		t.Fatalf("commit: %+v, %v; want a read of the suspensions for round 2", rd, err)
	}
	if _, err := m.Step(SuspensionsRead{Round: 1}); err == nil {
		t.Fatal("a read for round 1 was taken while round 2 opens")
	}
	if _, err := m.Step(SuspensionsRead{Round: 2, Suspended: []ledger.Suspension{{Trainer: "x", Until: 3}}}); err == nil {
		t.Fatal("a read naming no member ID was taken")
	}
	if rd, err = m.Step(SuspensionsRead{Round: 2, Suspended: []ledger.Suspension{{Trainer: ts[1], Until: 3}}}); err != nil || len(rd.Txs) != 1 {
		t.Fatalf("read: %+v, %v", rd, err)
	}
	if got := m.SuspendedUntil(ts[1]); got != 3 {
		t.Errorf("SuspendedUntil(rejected) = %d, want 3 (rounds 2 and 3)", got)
	}
	if o, ok := rd.Txs[0].(ledger.RoundOpened); !ok || o.Round != 2 || len(o.Trainers) != 2 || slices.Contains(o.Trainers, ts[1]) {
		t.Fatalf("round 2: %+v; want the trainers but the suspended %s", rd.Txs[0], ts[1])
	}
}

func TestMachineVerifyTimeout(t *testing.T) {
	m, ts, us, now := verifyMachine(t, "  timeout: 1m\n")
	if _, err := m.Step(DrawFixed{Round: 1, Drawn: ts}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Step(UpdateVerdict{Round: 1, Trainer: ts[0], Passed: true}); err != nil {
		t.Fatal(err)
	}
	rd, err := m.Step(Tick{Now: now.Add(30 * time.Second)})
	if err != nil || rd.Aggregation != nil || len(rd.Txs) != 0 {
		t.Fatalf("before the timeout: %+v, %v", rd, err)
	}
	rd, err = m.Step(Tick{Now: now.Add(61 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	// t2 and t3 have no verdict: rejected as unverified; t1 alone is
	// below min 2, so the round fails, at its deadline (when the
	// aggregator signs a RoundFailed).
	if len(rd.Txs) != 2 || !strings.Contains(rd.Waiting, "fails at its deadline") {
		t.Fatalf("at the timeout: %+v", rd)
	}
	for i, tx := range rd.Txs {
		ur, ok := tx.(ledger.UpdateRejected)
		if !ok || ur.UpdateDigest != us[i+1] || !strings.HasPrefix(ur.Reason, "unverified:") {
			t.Fatalf("tx %d: %+v", i, tx)
		}
	}
	if rd, err = m.Step(Tick{Now: now.Add(5 * time.Minute)}); err != nil || len(rd.Txs) != 0 {
		t.Fatalf("before the deadline: %+v, %v", rd, err)
	}
	if rd, err = m.Step(Tick{Now: now.Add(10 * time.Minute)}); err != nil || len(rd.Txs) != 1 {
		t.Fatalf("at the deadline: %+v, %v", rd, err)
	}
	if rf, ok := rd.Txs[0].(ledger.RoundFailed); !ok || !strings.Contains(rf.Reason, "1 updates passed the spot checks of 3") {
		t.Fatalf("at the deadline: %+v", rd.Txs[0])
	}
}

func TestJobVerifyValidate(t *testing.T) {
	pub, base := strings.Repeat("a", 64), strings.Repeat("b", 64)
	head := "name: v\nmodel:\n  digest: " + base + "\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"no published data", head + "verify:\n  fraction: 0.5\n  by: [" + pub + "]\n", "verify: needs datasets.published"},
		{"fraction", head + "datasets:\n  published: [" + pub + "]\nverify:\n  fraction: 0\n  by: [" + pub + "]\n", "verify.fraction: must be in (0, 1]"},
		{"no verifiers", head + "datasets:\n  published: [" + pub + "]\nverify:\n  fraction: 1\n", "verify.by: lists 0 verifiers"},
		{"bad verifier", head + "datasets:\n  published: [" + pub + "]\nverify:\n  fraction: 1\n  by: [x]\n", `verify.by[0]: "x" is not a member ID`},
		{"two policies", head + "datasets:\n  published: [" + pub + "]\nverify:\n  fraction: 1\n  by: [" + pub + "]\n  suspend_rounds: 1\n  suspend_job: true\n", "give one suspension policy"},
		{"unknown key", head + "datasets:\n  published: [" + pub + "]\nverify:\n  fraction: 1\n  by: [" + pub + "]\n  share: 1\n", "share"},
		{"quorum above the verifiers", head + "datasets:\n  published: [" + pub + "]\nverify:\n  fraction: 1\n  by: [" + pub + "]\n  quorum: 2\n",
			"verify.quorum: 2 is more than the 1 verifiers verify.by lists"},
		{"negative quorum", head + "datasets:\n  published: [" + pub + "]\nverify:\n  fraction: 1\n  by: [" + pub + "]\n  quorum: -1\n", "verify.quorum: must be ≥ 0"},
		{"more local steps than an update discloses", head + "train:\n  local_steps: 5000\ndatasets:\n  published: [" + pub + "]\nverify:\n  fraction: 1\n  by: [" + pub + "]\n",
			"train.local_steps: 5000: a job with verify discloses the digest of every step of each update, at most 4096 steps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseJob("job.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// A job without verify keeps its digest: the field is omitted.
	j, err := ParseJob("job.yaml", []byte(head))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(j.Canonical()), "verify") {
		t.Fatalf("canonical form of a job without verify: %s", j.Canonical())
	}
}

// A coordinator restarted after closing a round's submissions awaits the
// round's draw and verdicts again.
func TestMachineVerifyRecover(t *testing.T) {
	pub, base, v := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("e", 64)
	j, err := ParseJob("job.yaml", []byte(`name: spot
model:
  digest: `+base+`
datasets:
  published: [`+pub+`]
trainers:
  min: 1
verify:
  fraction: 1
  by: [`+v+`]
`))
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := strings.Repeat("1", 64), strings.Repeat("2", 64)
	u1, u2 := strings.Repeat("4", 64), strings.Repeat("5", 64)
	r := ledger.Round{JobID: "spot", Round: 1, ConfigDigest: j.Digest(), BaseModel: base, Trainers: []string{t1, t2}, Status: ledger.StatusOpen,
		Deadline: time.Unix(5000, 0), SubmissionsClosedHeight: 7, Updates: []ledger.Update{
			{Trainer: t1, UpdateDigest: u1, DatasetDigest: pub, Samples: 4},
			{Trainer: t2, UpdateDigest: u2, DatasetDigest: pub, Samples: 4, Rejected: true, RejectReason: "spot check"}}}
	m, err := Recover(Config{Job: j}, []ledger.Round{r})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Verifying(1) {
		t.Fatal("the recovered machine is not verifying round 1")
	}
	if rd, err := m.Step(JobStarted{Now: time.Unix(1000, 0)}); err != nil || rd.Aggregation != nil || len(rd.Txs) != 0 {
		t.Fatalf("start: %+v, %v", rd, err)
	}
	if _, err := m.Step(DrawFixed{Round: 1, Drawn: []string{t1, t2}}); err != nil {
		t.Fatal(err)
	}
	rd, err := m.Step(UpdateVerdict{Round: 1, Trainer: t1, Passed: true})
	if err != nil {
		t.Fatal(err)
	}
	if a := rd.Aggregation; a == nil || len(a.Inputs) != 1 || a.Inputs[0].Trainer != t1 {
		t.Fatalf("after the verdict: %+v", rd)
	}
}

// A job with verify closes a round's submissions before its deadline
// only once every selected trainer has an update (the ledger refuses an
// earlier close): a trainer's reported failure keeps them open until the
// deadline. A refused close is retried at the next tick, and the round
// fails after MaxCloseAttempts refusals.
func TestMachineVerifyClosesAtDeadline(t *testing.T) {
	pub, base, v := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("e", 64)
	j, err := ParseJob("job.yaml", []byte(`name: spot
seed: 3
model:
  digest: `+base+`
datasets:
  published: [`+pub+`]
  range_samples: 4
trainers:
  min: 2
deadline: 10m
verify:
  fraction: 1
  by: [`+v+`]
`))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := j.Recipe([]string{strings.Repeat("c", 64)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if rc.Verify.Steps != j.Train.LocalSteps {
		t.Fatalf("recipe verify.steps %d, want the job's local steps %d", rc.Verify.Steps, j.Train.LocalSteps)
	}
	rc.Published[0].Samples = 30
	m, err := New(Config{Job: j, Recipe: rc})
	if err != nil {
		t.Fatal(err)
	}
	ts := []string{strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64)}
	now := time.Unix(1000, 0)
	step := func(ev Event) Ready {
		t.Helper()
		rd, err := m.Step(ev)
		if err != nil {
			t.Fatalf("%T: %v", ev, err)
		}
		return rd
	}
	closes := func(rd Ready) bool {
		return len(rd.Txs) == 1 && rd.Txs[0] == (ledger.SubmissionsClosed{JobID: "spot", Round: 1})
	}
	step(MembersChanged{Trainers: ts})
	for _, tr := range ts {
		step(TrainerJoined{Trainer: tr})
	}
	step(JobStarted{Now: now})
	step(SuspensionsRead{Round: 1})
	step(TxCommitted{Type: ledger.TypeRoundOpened, Round: 1})
	step(UpdateArrived{Round: 1, Trainer: ts[0], Digest: strings.Repeat("4", 64), Dataset: pub, Samples: 4})
	step(UpdateArrived{Round: 1, Trainer: ts[1], Digest: strings.Repeat("5", 64), Dataset: pub, Samples: 4})
	rd := step(UpdateInvalid{Round: 1, Trainer: ts[2], Reason: "training failed"})
	if len(rd.Txs) != 0 || !strings.Contains(rd.Waiting, "the submissions close at the deadline") {
		t.Fatalf("after the third trainer's failure: %+v; want no close before the deadline", rd)
	}
	if rd = step(Tick{Now: now.Add(9 * time.Minute)}); len(rd.Txs) != 0 {
		t.Fatalf("before the deadline: %+v", rd)
	}
	if rd = step(Tick{Now: now.Add(10 * time.Minute)}); !closes(rd) {
		t.Fatalf("at the deadline: %+v; want SubmissionsClosed", rd)
	}
	for i := 1; i < MaxCloseAttempts; i++ {
		rd = step(TxRejected{Type: ledger.TypeSubmissionsClosed, Round: 1, Reason: "submissions may not close before the round's deadline"})
		if len(rd.Txs) != 0 || !strings.Contains(rd.Waiting, "retrying at the next tick") {
			t.Fatalf("refusal %d: %+v; want a retry at the next tick", i, rd)
		}
		if rd = step(Tick{Now: now.Add(10*time.Minute + time.Duration(i)*time.Second)}); !closes(rd) {
			t.Fatalf("the tick after refusal %d: %+v; want SubmissionsClosed again", i, rd)
		}
	}
	rd = step(TxRejected{Type: ledger.TypeSubmissionsClosed, Round: 1, Reason: "no"})
	if rf, ok := singleTx(rd).(ledger.RoundFailed); !ok || !strings.Contains(rf.Reason, "refused SubmissionsClosed 3 times") {
		t.Fatalf("after %d refusals: %+v", MaxCloseAttempts, rd)
	}
}

func singleTx(rd Ready) ledger.TxBody {
	if len(rd.Txs) != 1 {
		return nil
	}
	return rd.Txs[0]
}

// The machine selects by the ledger's suspensions, not by what it saw:
// one it never saw a verdict for (a rejection that landed after its round
// failed, or while it was down) keeps the trainer out; after a refused
// RoundOpened it reads them again.
func TestMachineVerifySuspensionsFromLedger(t *testing.T) {
	m, ts, _, now := verifyMachine(t, "")
	step := func(ev Event) Ready {
		t.Helper()
		rd, err := m.Step(ev)
		if err != nil {
			t.Fatalf("%T: %v", ev, err)
		}
		return rd
	}
	step(DrawFixed{Round: 1, Drawn: ts})
	// The verify timeout passes with no verdict: the round fails.
	rd := step(Tick{Now: now.Add(11 * time.Minute)})
	if len(rd.Txs) != 4 {
		t.Fatalf("at the deadline: %+v; want 3 unverified rejections and RoundFailed", rd)
	}
	if _, ok := rd.Txs[3].(ledger.RoundFailed); !ok {
		t.Fatalf("at the deadline: %+v", rd.Txs[3])
	}
	if rd = step(TxCommitted{Type: ledger.TypeRoundFailed, Round: 1}); rd.ReadSuspensions != 2 || len(rd.Txs) != 0 {
		t.Fatalf("after the failure: %+v", rd)
	}
	// The ledger shows t1 suspended (a late rejection of round 1).
	rd = step(SuspensionsRead{Round: 2, Suspended: []ledger.Suspension{{Trainer: ts[0], Until: 3}, {Trainer: ts[2], Until: 1}}})
	o, ok := rd.Txs[0].(ledger.RoundOpened)
	if !ok || slices.Contains(o.Trainers, ts[0]) || !slices.Contains(o.Trainers, ts[2]) {
		t.Fatalf("round 2: %+v; want t1 (suspended to round 3) left out, t3 (to round 1) selected", rd.Txs)
	}
	// The ledger refuses it (a suspension landed since the read): the
	// machine reads again before the next attempt.
	rd = step(TxRejected{Type: ledger.TypeRoundOpened, Round: 2, Reason: "trainers[0] is suspended"})
	if rd.ReadSuspensions != 0 || len(rd.Txs) != 0 {
		t.Fatalf("after the refusal: %+v", rd)
	}
	if rd = step(Tick{Now: now.Add(12 * time.Minute)}); rd.ReadSuspensions != 2 || len(rd.Txs) != 0 {
		t.Fatalf("the tick after the refusal: %+v; want a new read", rd)
	}
	rd = step(SuspensionsRead{Round: 2, Suspended: []ledger.Suspension{{Trainer: ts[0], Until: 3}, {Trainer: ts[1], Until: 3}}})
	if len(rd.Txs) != 0 || !strings.Contains(rd.Waiting, "eligible") {
		t.Fatalf("with two of three suspended and min 2: %+v", rd)
	}
}

// FuzzSuspensionsRead decodes a ledger node's Suspensions reply (outside
// bytes: the node may lie) and steps a machine about to open round 1 with
// it: the machine refuses a malformed read unchanged, or opens the round
// selecting no trainer the read suspends for it.
func FuzzSuspensionsRead(f *testing.F) {
	t1 := strings.Repeat("1", 64)
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"trainer":"` + t1 + `","until":1}]`))
	f.Add([]byte(`[{"trainer":"` + t1 + `","until":18446744073709551615},{"trainer":"x","until":0}]`))
	f.Add([]byte(`null`))
	pub, base, v := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("e", 64)
	j, err := ParseJob("job.yaml", []byte("name: spot\nmodel:\n  digest: "+base+"\ndatasets:\n  published: ["+pub+
		"]\n  range_samples: 4\ntrainers:\n  min: 1\nverify:\n  fraction: 1\n  by: ["+v+"]\n"))
	if err != nil {
		f.Fatal(err)
	}
	rc, err := j.Recipe([]string{strings.Repeat("c", 64)}, "")
	if err != nil {
		f.Fatal(err)
	}
	rc.Published[0].Samples = 30
	ts := []string{t1, strings.Repeat("2", 64)}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var ss []ledger.Suspension
		if json.Unmarshal(raw, &ss) != nil {
			return
		}
		m, err := New(Config{Job: j, Recipe: rc})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range []Event{MembersChanged{Trainers: ts}, TrainerJoined{Trainer: ts[0]}, TrainerJoined{Trainer: ts[1]}, JobStarted{Now: time.Unix(1000, 0)}} {
			if _, err := m.Step(ev); err != nil {
				t.Fatal(err)
			}
		}
		rd, err := m.Step(SuspensionsRead{Round: 1, Suspended: ss})
		if err != nil {
			if !errors.Is(err, ErrBadEvent) {
				t.Fatalf("error %v, want ErrBadEvent", err)
			}
			if m.SuspendedUntil(t1) != 0 || m.suspRead != 0 {
				t.Fatal("a refused read changed the machine")
			}
			return
		}
		for _, tx := range rd.Txs {
			o, ok := tx.(ledger.RoundOpened)
			if !ok {
				continue
			}
			for _, tr := range o.Trainers {
				for _, s := range ss {
					if s.Trainer == tr && s.Suspended(1) {
						t.Fatalf("round 1 selects %s, which the read suspends until %d", tr, s.Until)
					}
				}
			}
		}
	})
}

// A coordinator restarted after a round failed does not select by what
// its history shows: it reads the ledger's suspensions before it opens
// the next round (a rejection that landed after the round failed is in
// no round it replays as a verdict it saw).
func TestMachineVerifyRecoverReadsSuspensions(t *testing.T) {
	pub, base, v := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("e", 64)
	j, err := ParseJob("job.yaml", []byte(`name: spot
model:
  digest: `+base+`
datasets:
  published: [`+pub+`]
rounds: 3
trainers:
  min: 1
verify:
  fraction: 1
  by: [`+v+`]
  suspend_job: true
`))
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := strings.Repeat("1", 64), strings.Repeat("2", 64)
	r := ledger.Round{JobID: "spot", Round: 1, ConfigDigest: j.Digest(), BaseModel: base, Trainers: []string{t1, t2}, Status: ledger.StatusFailed,
		Deadline: time.Unix(5000, 0), SubmissionsClosedHeight: 7, Updates: []ledger.Update{
			{Trainer: t1, UpdateDigest: strings.Repeat("4", 64), DatasetDigest: pub, Samples: 4},
			{Trainer: t2, UpdateDigest: strings.Repeat("5", 64), DatasetDigest: pub, Samples: 4}}}
	rc, err := j.Recipe([]string{strings.Repeat("c", 64)}, "")
	if err != nil {
		t.Fatal(err)
	}
	rc.Published[0].Samples = 30
	m, err := Recover(Config{Job: j, Recipe: rc}, []ledger.Round{r})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []Event{MembersChanged{Trainers: []string{t1, t2}}, TrainerJoined{Trainer: t1}, TrainerJoined{Trainer: t2}} {
		if _, err := m.Step(ev); err != nil {
			t.Fatal(err)
		}
	}
	rd, err := m.Step(JobStarted{Now: time.Unix(1000, 0)})
	if err != nil || rd.ReadSuspensions != 2 || len(rd.Txs) != 0 {
		t.Fatalf("start: %+v, %v; want a read of the suspensions for round 2 and no RoundOpened", rd, err)
	}
	rd, err = m.Step(SuspensionsRead{Round: 2, Suspended: []ledger.Suspension{{Trainer: t2, Until: math.MaxUint64}}})
	if err != nil || len(rd.Txs) != 1 {
		t.Fatalf("read: %+v, %v", rd, err)
	}
	if o, ok := rd.Txs[0].(ledger.RoundOpened); !ok || o.Round != 2 || !slices.Equal(o.Trainers, []string{t1}) {
		t.Fatalf("round 2: %+v; want t1 alone (t2 suspended for the rest of the job)", rd.Txs[0])
	}
}
