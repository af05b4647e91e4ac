package ledger

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// spotCheckTxs are one tx of each spot-check encoding: a recipe with a
// verify rule, a SubmissionsClosed, an UpdateVerified, a verifier's
// UpdateRejected naming a step, an UpdateSubmitted disclosing its step
// digests, and a recipe with a verifier quorum.
func spotCheckTxs(t testing.TB, c *cast) [][]byte {
	v := newActor("verifier", RoleVerifier)
	return [][]byte{
		c.coord.sign(t, JobRegistered{JobID: "spot", Recipe: RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{c.agg.id},
			Published: []PublishedRef{{Digest: hexDigest("p"), Samples: 5}}, RangeSeed: 9, RangeSamples: 2,
			Verify: &VerifyRule{Fraction: 0.25, By: []string{v.id}, SuspendRounds: 2, Steps: 3}}}),
		c.coord.sign(t, SubmissionsClosed{JobID: "spot", Round: 1}),
		v.sign(t, UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: hexDigest("u1")}),
		v.sign(t, UpdateRejected{JobID: "spot", Round: 1, UpdateDigest: hexDigest("u2"), Reason: "spot check: replay differs", Step: 3}),
		c.trainers[0].sign(t, UpdateSubmitted{JobID: "spot", Round: 1, UpdateDigest: hexDigest("u3"), DatasetDigest: hexDigest("p"), Samples: 2,
			Ranges: []SampleRange{{Dataset: hexDigest("p"), First: 0, End: 2}}, Commitment: disclosedCommitment(t)}),
		c.coord.sign(t, JobRegistered{JobID: "spot-quorum", Recipe: RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{c.agg.id},
			Published: []PublishedRef{{Digest: hexDigest("p"), Samples: 5}}, RangeSeed: 9, RangeSamples: 2,
			Verify: &VerifyRule{Fraction: 1, By: []string{v.id, c.trainers[1].id, c.agg.id}, Quorum: 2, SuspendJob: true, Steps: 3}}}),
	}
}

// disclosedCommitment is a three-step commitment that discloses its step
// digests.
func disclosedCommitment(t testing.TB) *TrainingCommitment {
	ds := []string{hexDigest("s1"), hexDigest("s2"), hexDigest("s3")}
	root, err := StepDigestsRoot(ds)
	if err != nil {
		t.Fatal(err)
	}
	return &TrainingCommitment{InputsDigest: hexDigest("i"), Steps: 3, StepRoot: root, StepDigests: ds}
}

// TestSpotCheckGolden pins the spot-check encodings (-update rewrites
// testdata/tx_spotcheck.golden).
func TestSpotCheckGolden(t *testing.T) {
	c := newCast()
	var got string
	for _, e := range spotCheckTxs(t, c) {
		tx, err := DecodeTx(e)
		if err != nil {
			t.Fatal(err)
		}
		h := TxHash(e)
		got += fmt.Sprintf("%s %s %s\n", tx.Body.TxType(), hex.EncodeToString(h[:]), e)
	}
	path := filepath.Join("testdata", "tx_spotcheck.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestSpotCheckGolden -update)", err)
	}
	if got != string(want) {
		t.Fatalf("spot-check encodings changed:\ngot\n%s\nwant\n%s", got, want)
	}
}

func TestSpotCheckBodies(t *testing.T) {
	c := newCast()
	v := newActor("verifier", RoleVerifier)
	for _, tc := range []struct {
		name string
		body TxBody
		want string
	}{
		{"close without job", SubmissionsClosed{Round: 1}, "job_id is required"},
		{"close of round 0", SubmissionsClosed{JobID: "j"}, "round must be at least 1"},
		{"pass of round 0", UpdateVerified{JobID: "j", UpdateDigest: hexDigest("u")}, "round must be at least 1"},
		{"pass of a bad digest", UpdateVerified{JobID: "j", Round: 1, UpdateDigest: "x"}, "update_digest"},
		{"rejection of too many steps", UpdateRejected{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), Reason: "r", Step: MaxCommittedSteps + 1}, "step"},
		{"disclosed digests off the root", UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 1,
			Commitment: func() *TrainingCommitment { c := disclosedCommitment(t); c.StepRoot = hexDigest("other"); return c }()}, "hash to"},
		{"too few disclosed digests", UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 1,
			Commitment: func() *TrainingCommitment { c := disclosedCommitment(t); c.StepDigests = c.StepDigests[:2]; return c }()}, "2 disclosed for 3 steps"},
		{"a disclosed digest that is none", UpdateSubmitted{JobID: "j", Round: 1, UpdateDigest: hexDigest("u"), DatasetDigest: hexDigest("d"), Samples: 1,
			Commitment: func() *TrainingCommitment { c := disclosedCommitment(t); c.StepDigests[1] = "x"; return c }()}, "step_digests[1]"},
		{"recipe verify without published data", JobRegistered{JobID: "j", Recipe: RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1,
			Aggregators: []string{c.agg.id}, Verify: &VerifyRule{Fraction: 1, By: []string{v.id}, Steps: 3}}}, "only on published data"},
		{"quorum above the verifiers", JobRegistered{JobID: "j", Recipe: RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1,
			Aggregators: []string{c.agg.id}, Verify: &VerifyRule{Fraction: 1, By: []string{v.id}, Quorum: 2, Steps: 3}}}, "recipe.verify.quorum 2"},
		{"negative quorum", JobRegistered{JobID: "j", Recipe: RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1,
			Aggregators: []string{c.agg.id}, Verify: &VerifyRule{Fraction: 1, By: []string{v.id}, Quorum: -1, Steps: 3}}}, "recipe.verify.quorum -1"},
		{"verify without steps", JobRegistered{JobID: "j", Recipe: RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1,
			Aggregators: []string{c.agg.id}, Verify: &VerifyRule{Fraction: 1, By: []string{v.id}}}}, "recipe.verify.steps 0"},
		{"verify of more steps than an update discloses", JobRegistered{JobID: "j", Recipe: RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1,
			Aggregators: []string{c.agg.id}, Verify: &VerifyRule{Fraction: 1, By: []string{v.id}, Steps: MaxDisclosedSteps + 1}}}, "recipe.verify.steps 4097"},
		{"pretrain verify of other than its inner steps", JobRegistered{JobID: "j", Recipe: RoundRecipe{Strategy: "diloco", Compression: "none", MinTrainers: 1,
			Aggregators: []string{c.agg.id}, Mode: RecipePretrain, InnerSteps: 4, Published: []PublishedRef{{Digest: hexDigest("p"), Samples: 5}}, RangeSamples: 1,
			Verify: &VerifyRule{Fraction: 1, By: []string{v.id}, Steps: 3}}}, "a pretrain job's updates take its 4 inner steps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := SignTx(v.key, testChain, 1, tc.body); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// Strict decoding: a spot-check body has one reading.
	env := v.sign(t, UpdateVerified{JobID: "spot", Round: 1, UpdateDigest: hexDigest("u1")})
	e, err := DecodeEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func([]byte) []byte{
		"unknown field": func(p []byte) []byte { return bytes.Replace(p, []byte(`"body":{`), []byte(`"body":{"step":1,`), 1) },
		"repeated field": func(p []byte) []byte {
			return bytes.Replace(p, []byte(`"body":{"job_id":`), []byte(`"body":{"job_id":"x","job_id":`), 1)
		},
		"case-folded": func(p []byte) []byte {
			return bytes.Replace(p, []byte(`"update_digest"`), []byte(`"Update_digest"`), 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := edit(e.Payload)
			if bytes.Equal(p, e.Payload) {
				t.Fatal("edit changed nothing")
			}
			if _, err := DecodeTx(SignEnvelope(v.key, PayloadType, p).Encode()); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if !MaySign(TypeUpdateRejected, RoleVerifier) || !MaySign(TypeUpdateRejected, RoleAggregator) || MaySign(TypeUpdateRejected, RoleTrainer) ||
		!MaySign(TypeUpdateVerified, RoleVerifier) || MaySign(TypeUpdateVerified, RoleAuditor) || !MaySign(TypeSubmissionsClosed, RoleCoordinator) {
		t.Fatal("MaySign")
	}
}
