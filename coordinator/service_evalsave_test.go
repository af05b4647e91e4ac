package coordinator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
)

// Finished evaluations survive a restart: a new service on the same Dir
// shows them in Status; a damaged file stops the service with its name.
func TestEvalResultsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := newTestService(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	s.ev.mu.Lock()
	s.ev.results = map[string]evalOutcome{
		"m2": {job: "j", round: 2, result: model.EvalResult{Tokens: 10, MeanNLL: 2.5, Perplexity: 12.182493960703473}},
		"m1": {job: "j", round: 1, err: "eval.data x: no tokens"},
		"o1": {job: "other", round: 1, result: model.EvalResult{Tokens: 3, MeanNLL: 1}},
	}
	if err := s.ev.saveLocked(); err != nil {
		t.Fatal(err)
	}
	s.ev.mu.Unlock()

	s2, err := newTestService(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	resp := &coordinatorv1.StatusResponse{JobId: "j", Rounds: []*coordinatorv1.Round{{Round: 1, ModelDigest: "m1"}, {Round: 2, ModelDigest: "m2"}, {Round: 3, ModelDigest: "o1"}}}
	s2.ev.fill(resp)
	if r := resp.Rounds[1]; !r.Evaluated || r.EvalNll != 2.5 || r.EvalPerplexity != 12.182493960703473 {
		t.Errorf("round 2 after a restart: %+v, want NLL 2.5", r)
	}
	if resp.Rounds[0].Evaluated || !strings.Contains(resp.Detail, "round 1 eval: eval.data x: no tokens") {
		t.Errorf("round 1's failure after a restart: evaluated %v, detail %q", resp.Rounds[0].Evaluated, resp.Detail)
	}
	if resp.Rounds[2].Evaluated {
		t.Error("another job's evaluation was shown")
	}

	for _, bad := range []string{"{", `[{"model":"","job":"j"}]`} {
		if err := os.WriteFile(filepath.Join(dir, evalsFile), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := newTestService(t, dir); err == nil || !strings.Contains(err.Error(), evalsFile) {
			t.Errorf("damaged %s (%q): %v, want an error naming it", evalsFile, bad, err)
		}
	}
}

// A resumed job queues the due evaluations of its committed rounds that
// have no saved result or no RoundEvaluated on the ledger, each once, and
// nothing for open rounds.
func TestQueueMissedEvals(t *testing.T) {
	s, err := newTestService(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	job := DefaultJob()
	job.Name, job.Rounds = "j", 6
	job.Eval.Data, job.Eval.Every = "eval.txt", 2
	j := &runningJob{job: job, base: "base"}
	s.ev.results = map[string]evalOutcome{"m2": {job: "j", round: 2}, "m4": {job: "j", round: 4}}
	s.ev.active = true // no worker: the test reads the queue
	history := []ledger.Round{
		{Round: 1, Status: ledger.StatusCommitted, ModelDigest: "m1"},                                   // not due (every 2)
		{Round: 2, Status: ledger.StatusCommitted, ModelDigest: "m2", Evaluation: &ledger.Evaluation{}}, // done before the restart, on the ledger
		{Round: 3, Status: ledger.StatusCommitted, ModelDigest: "m3"},                                   // not due
		{Round: 4, Status: ledger.StatusCommitted, ModelDigest: "m4"},                                   // done, but its RoundEvaluated never committed
		{Round: 5, Status: ledger.StatusCommitted, ModelDigest: "m5"},                                   // not due
		{Round: 6, Status: ledger.StatusCommitted, ModelDigest: "m6"},                                   // the last round: due
	}
	s.ev.addMissed(context.Background(), j, history)
	s.ev.addMissed(context.Background(), j, history) // a second pass queues nothing more
	s.ev.addMissed(context.Background(), j, []ledger.Round{{Round: 6, Status: ledger.StatusOpen}})
	var got []string
	for _, q := range s.ev.queue {
		got = append(got, fmt.Sprintf("%d:%s", q.round, q.model))
	}
	if want := []string{"4:m4", "6:m6"}; !slices.Equal(got, want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
}
