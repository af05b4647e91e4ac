package spotcheck

import (
	"testing"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/trainer"
)

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		v      trainer.Verdict
		passed bool
		step   uint64
	}{
		{"honest", trainer.Verdict{InputsMatch: true, StepsMatch: true, StepRootMatch: true, UpdateMatch: true}, true, 0},
		{"other inputs", trainer.Verdict{StepsMatch: true, UpdateMatch: true, Reason: "x"}, false, 1},
		{"pinned step", trainer.Verdict{InputsMatch: true, StepsMatch: true, FirstBadStep: 4, After: 3, Before: 4, Reason: "x"}, false, 4},
		{"unpinned range", trainer.Verdict{InputsMatch: true, StepsMatch: true, After: 2, Before: 6, Reason: "x"}, false, 3},
		{"steps match, update not", trainer.Verdict{InputsMatch: true, StepsMatch: true, StepRootMatch: true, Replayed: ledger.TrainingCommitment{Steps: 5}, Reason: "x"}, false, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Verdict(&tc.v)
			if r.Passed != tc.passed || r.Step != tc.step || (!r.Passed && r.Reason == "") {
				t.Fatalf("got %+v, want passed %v step %d", r, tc.passed, tc.step)
			}
		})
	}
}
