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
