package coordinator

import (
	"fmt"
	"strings"
	"testing"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
)

// TestProveRelayLimits admits proof questions up to the per-trainer and
// per-caller limits, and frees a slot when a question is answered or
// given up.
func TestProveRelayLimits(t *testing.T) {
	var r proveRelay
	ask := func(trainer, caller string) (string, string) {
		return r.add(&pendingProof{trainer: trainer, caller: caller, answer: make(chan *coordinatorv1.SubmitProofRequest, 1)})
	}
	// One trainer: 8 questions, then BUSY, from any caller.
	var ids []string
	for i := range maxProofsPerTrainer {
		id, busy := ask("t", fmt.Sprint("c", i))
		if busy != "" {
			t.Fatalf("question %d refused: %s", i, busy)
		}
		ids = append(ids, id)
	}
	if _, busy := ask("t", "other"); !strings.Contains(busy, "trainer has 8") {
		t.Errorf("a ninth question to one trainer: %q, want the trainer's limit", busy)
	}
	// An answer frees a slot; a wrong trainer's answer does not count.
	if r.take(ids[0], "not-t") != nil {
		t.Error("another trainer took the question")
	}
	if r.take(ids[0], "t") == nil || r.take(ids[0], "t") != nil {
		t.Error("the trainer's answer was not taken exactly once")
	}
	if _, busy := ask("t", "other"); busy != "" {
		t.Errorf("after an answer: %q, want admitted", busy)
	}
	// One caller: 64 questions over many trainers, then BUSY.
	var mine []string
	for i := range maxProofsPerCaller {
		id, busy := ask(fmt.Sprint("tr", i), "me")
		if busy != "" {
			t.Fatalf("question %d refused: %s", i, busy)
		}
		mine = append(mine, id)
	}
	if _, busy := ask("fresh", "me"); !strings.Contains(busy, "caller has 64") {
		t.Errorf("a 65th question of one caller: %q, want the caller's limit", busy)
	}
	r.remove(mine[5])
	r.remove(mine[5]) // twice is harmless
	if _, busy := ask("fresh", "me"); busy != "" {
		t.Errorf("after giving one up: %q, want admitted", busy)
	}
	// Everything removed leaves no counts behind.
	r.mu.Lock()
	pending := make([]string, 0, len(r.pending))
	for id := range r.pending {
		pending = append(pending, id)
	}
	r.mu.Unlock()
	for _, id := range pending {
		r.remove(id)
	}
	if len(r.pending) != 0 || len(r.byTrainer) != 0 || len(r.byCaller) != 0 {
		t.Errorf("left %d pending, %v, %v", len(r.pending), r.byTrainer, r.byCaller)
	}
}
