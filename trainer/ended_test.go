package trainer

import (
	"context"
	"testing"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
)

// A round end stops the task of that round in progress, leaves another
// round's alone, and makes a later task of the ended round a skip.
func TestEndedRounds(t *testing.T) {
	var e endedRounds
	ctx := context.Background()
	t1 := &coordinatorv1.Task{JobId: "j", Round: 1}
	tctx, skip, done := e.start(ctx, t1)
	if skip != "" {
		t.Fatalf("skip %q", skip)
	}
	if e.end(&coordinatorv1.RoundEnded{JobId: "j", Round: 2, Reason: "other"}) || tctx.Err() != nil {
		t.Fatal("another round's end stopped the task")
	}
	if !e.end(&coordinatorv1.RoundEnded{JobId: "j", Round: 1, Reason: "job cancelled: x"}) || tctx.Err() == nil {
		t.Fatal("the round's end did not stop its task")
	}
	done()
	if _, skip, _ := e.start(ctx, t1); skip != "job cancelled: x" {
		t.Fatalf("a task of the ended round: skip %q", skip)
	}
	if _, skip, _ := e.start(ctx, &coordinatorv1.Task{JobId: "k", Round: 1}); skip != "" {
		t.Fatalf("another job's task skipped: %q", skip)
	}
}
