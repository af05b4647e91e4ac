package adversarial

import (
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/ledger"
)

// roundsBaseKrumParams are krum's effective parameters as the recipe of
// roundsSetup's job records them.
func roundsBaseKrumParams(t *testing.T) map[string]string {
	t.Helper()
	st, err := aggregator.New("krum", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := map[string]string{}
	for k, v := range st.Params() {
		p[k] = ledger.FormatParam(v)
	}
	return p
}

// A job's own coordinator tries to start a round from a model the job
// never produced: another job's committed model, an unrelated registered
// model, or its round 1 base again after round 1 committed; and a job
// whose recipe names its base model tries round 1 on another. Each is
// refused with the digest the round must start from, and the chain does
// not move. The round on the job's own last model then opens.
func TestAttackRoundBase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	r := roundsSetup(t, ctx)
	trainers := func(names ...string) []string {
		var ids []string
		for _, n := range names {
			ids = append(ids, r.nw.ID(n))
		}
		return ids
	}

	// Job adv-krum's round 1 commits model A.
	modelA := digestOf("round-base: job adv-krum's round 1 model")
	r.must(t, ctx, "aggregator", ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: modelA, Strategy: "krum",
		Params: roundsBaseKrumParams(t), Contributors: []ledger.Contribution{
			{Trainer: r.nw.ID("trainer-1"), UpdateDigest: r.updates["trainer-1"], Weight: 1},
			{Trainer: r.nw.ID("trainer-2"), UpdateDigest: r.updates["trainer-2"], Weight: 0}}})

	// Another job (coordinator-2's, on the same base) commits model B.
	other := "adv-round-base-other"
	r.must(t, ctx, "coordinator-2", ledger.JobRegistered{JobID: other, Recipe: ledger.RoundRecipe{Strategy: "fedavg", Compression: "none",
		MinTrainers: 1, Aggregators: []string{r.nw.ID("aggregator")}, BaseModel: r.base}})
	r.must(t, ctx, "coordinator-2", ledger.RoundOpened{JobID: other, Round: 1, ConfigDigest: digestOf("other config"), BaseModel: r.base,
		Strategy: "fedavg", Trainers: trainers("trainer-3"), Deadline: time.Now().Add(time.Hour)})
	otherUpdate := digestOf("round-base: trainer-3's update to the other job")
	r.must(t, ctx, "trainer-3", ledger.UpdateSubmitted{JobID: other, Round: 1, UpdateDigest: otherUpdate, DatasetDigest: r.datasets["trainer-3"], Samples: roundsSamples})
	modelB := digestOf("round-base: the other job's round 1 model")
	r.must(t, ctx, "aggregator", ledger.RoundCommitted{JobID: other, Round: 1, ModelDigest: modelB, Strategy: "fedavg",
		Contributors: []ledger.Contribution{{Trainer: r.nw.ID("trainer-3"), UpdateDigest: otherUpdate, Weight: 1}}})

	// An unrelated model any coordinator may register.
	unrelated := digestOf("round-base: an unrelated registered model")
	r.must(t, ctx, "coordinator", ledger.ModelRegistered{Digest: unrelated, Name: "unrelated", Licence: "CC0-1.0", Source: "test"})

	open := func(job string, round uint64, base string) ledger.RoundOpened {
		return ledger.RoundOpened{JobID: job, Round: round, ConfigDigest: digestOf("config"), BaseModel: base, Strategy: "krum",
			Trainers: trainers("trainer-1", "trainer-2"), Deadline: time.Now().Add(time.Hour)}
	}
	for _, tc := range []struct {
		name, base string
	}{
		{"round 2 on another job's model", modelB},
		{"round 2 on an unrelated registered model", unrelated},
		{"round 2 back on round 1's base", r.base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.attack(t, ctx, "coordinator", open(r.job, 2, tc.base),
				`round 2 of job "`+r.job+`" must start from `+modelA+", the model round 1 committed", "it names base model "+tc.base)
		})
	}
	t.Run("round 1 on another model than the recipe's base", func(t *testing.T) {
		job := "adv-round-base-pinned"
		r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: job, Recipe: ledger.RoundRecipe{Strategy: "krum", Params: roundsBaseKrumParams(t),
			Compression: "none", MinTrainers: 2, Aggregators: []string{r.nw.ID("aggregator")}, BaseModel: r.base}})
		r.attack(t, ctx, "coordinator", open(job, 1, unrelated),
			`round 1 of job "`+job+`" must start from `+r.base+", the base model of the job's recipe", "it names base model "+unrelated)
	})

	// The honest round 2 starts from model A.
	if _, err := r.signers["coordinator"].Submit(ctx, open(r.job, 2, modelA)); err != nil {
		t.Fatalf("round 2 on the job's own model: %v", err)
	}
}
