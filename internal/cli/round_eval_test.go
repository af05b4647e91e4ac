package cli

import (
	"strings"
	"testing"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
)

func TestPrintJobStatusEval(t *testing.T) {
	st := &coordinatorv1.StatusResponse{JobId: "j", State: "done", RoundsTotal: 2, Rounds: []*coordinatorv1.Round{
		{Round: 1, Status: "committed", ModelDigest: "m1", Evaluated: true, EvalNll: 2.345678, EvalPerplexity: 10.4389},
		{Round: 2, Status: "committed", ModelDigest: "m2"},
	}}
	var b strings.Builder
	PrintJobStatus(&b, st)
	out := b.String()
	if !strings.Contains(out, "eval NLL") || !strings.Contains(out, "2.3457") || !strings.Contains(out, "perplexity 10.44") {
		t.Fatalf("no eval line for round 1:\n%s", out)
	}
	if n := strings.Count(out, "eval NLL"); n != 1 {
		t.Fatalf("%d eval lines, want 1 (round 2 was not evaluated):\n%s", n, out)
	}
}

// A job the coordinator has not loaded has no total: the header says only
// how many rounds the ledger holds, not "of 0".
func TestPrintJobStatusRecordedOnly(t *testing.T) {
	for _, tc := range []struct {
		total int32
		want  string
	}{
		{2, "job j: done, 1 of 2 rounds recorded\n"},
		{0, "job j: recorded, 1 round recorded\n"},
	} {
		state := "done"
		if tc.total == 0 {
			state = "recorded"
		}
		st := &coordinatorv1.StatusResponse{JobId: "j", State: state, RoundsTotal: tc.total, Rounds: []*coordinatorv1.Round{{Round: 1, Status: "committed", ModelDigest: "m1"}}}
		var b strings.Builder
		PrintJobStatus(&b, st)
		if first, _, _ := strings.Cut(b.String(), "\n"); first+"\n" != tc.want {
			t.Errorf("total %d: header %q, want %q", tc.total, first, tc.want)
		}
	}
}
