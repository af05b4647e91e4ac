package trainer

import (
	"crypto/ed25519"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

func TestDisclose(t *testing.T) {
	d := func(c byte) string { return strings.Repeat(string(c), 64) }
	digests := []string{d('a'), d('b'), d('c')}
	root, err := ledger.StepDigestsRoot(digests)
	if err != nil {
		t.Fatal(err)
	}
	commit := &ledger.TrainingCommitment{InputsDigest: d('1'), Steps: 3, StepRoot: root}
	verified := &ledger.JobRecord{JobID: "spot", Recipe: ledger.RoundRecipe{Verify: &ledger.VerifyRule{Fraction: 1, Steps: 3}}}
	plain := &ledger.JobRecord{JobID: "plain"}
	for _, tc := range []struct {
		name    string
		job     *ledger.JobRecord
		commit  *ledger.TrainingCommitment
		digests []string
		want    string // error; "" discloses (verify) or passes commit unchanged
	}{
		{"verify job discloses", verified, commit, digests, ""},
		{"plain job keeps them private", plain, commit, digests, ""},
		{"no commitment", verified, nil, digests, `job "spot" spot-checks its updates (verify), so an update must disclose its step digests`},
		{"too few digests", verified, commit, digests[:2], "2 step digests recorded for the 3 committed steps"},
		{"steps other than the job's", &ledger.JobRecord{JobID: "spot", Recipe: ledger.RoundRecipe{Verify: &ledger.VerifyRule{Fraction: 1, Steps: 4}}}, commit, digests, "of 4 steps (verify.steps); this update trained 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Disclose(tc.job, tc.commit, tc.digests)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want an error containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.job.Recipe.Verify == nil {
				if got != tc.commit || got.StepDigests != nil {
					t.Fatalf("a job without verify: commitment %+v, want it unchanged", got)
				}
				return
			}
			if !slices.Equal(got.StepDigests, tc.digests) || tc.commit.StepDigests != nil {
				t.Fatalf("disclosed %v (the input now %v), want %v and the input unchanged", got.StepDigests, tc.commit.StepDigests, tc.digests)
			}
			// The ledger's stateless check passes the disclosure.
			if _, err := ledger.SignTx(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)), "c", 1, ledger.UpdateSubmitted{JobID: "spot", Round: 1, UpdateDigest: d('e'), DatasetDigest: d('f'), Samples: 1, Commitment: got}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
