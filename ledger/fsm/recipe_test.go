package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// TestRecipeRules: every rule the recipe adds to the FSM, each refused with
// its code and reason, leaving the state as it was.
func TestRecipeRules(t *testing.T) {
	coord2 := newActor("coordinator-2", ledger.RoleCoordinator)
	agg2 := newActor("aggregator-2", ledger.RoleAggregator)
	type env struct {
		c  *cast
		ch *chain
		fx roundFixture
	}
	// Every case starts from job-1 round 1 open (all three trainers
	// selected), trainers 0 and 1 having submitted, a second coordinator
	// and a second (non-designated) aggregator being members.
	setup := func(t *testing.T) *env {
		e := &env{c: newCast()}
		e.ch = newChain(t, e.c.genesis(t), e.c.node.id)
		e.ch.mustApply(e.c.admin.sign(t, ledger.MemberAdded{PublicKey: coord2.pubHex(), Role: ledger.RoleCoordinator}),
			e.c.admin.sign(t, ledger.MemberAdded{PublicKey: agg2.pubHex(), Role: ledger.RoleAggregator}))
		e.fx = e.c.setupRound(t, e.ch)
		e.ch.mustApply(e.fx.submit(t, e.c.trainers[0], 0, 1, digest("ua")), e.fx.submit(t, e.c.trainers[1], 1, 1, digest("ub")))
		return e
	}
	open := func(e *env, by *actor, job string, round uint64, trainers int) []byte {
		var ids []string
		for _, tr := range e.c.trainers[:trainers] {
			ids = append(ids, tr.id)
		}
		return by.sign(e.ch.t, ledger.RoundOpened{JobID: job, Round: round, ConfigDigest: digest("c"), BaseModel: e.fx.base, Strategy: "fedavg",
			Trainers: ids, Deadline: t0.Add(time.Hour)})
	}
	both := func(e *env) []ledger.Contribution {
		return []ledger.Contribution{{Trainer: e.c.trainers[0].id, UpdateDigest: digest("ua"), Weight: 0.5}, {Trainer: e.c.trainers[1].id, UpdateDigest: digest("ub"), Weight: 0.5}}
	}
	commit := func(e *env, by *actor, strategy string, params map[string]string, cs []ledger.Contribution) []byte {
		return by.sign(e.ch.t, ledger.RoundCommitted{JobID: "job-1", Round: 1, ModelDigest: digest("m"), Strategy: strategy, Params: params, Contributors: cs})
	}
	cases := []struct {
		name string
		tx   func(*env) []byte
		code ledger.Code
		want string
	}{
		{"trainer registers a job", func(e *env) []byte {
			return e.c.trainers[0].sign(e.ch.t, ledger.JobRegistered{JobID: "j2", Recipe: e.c.testRecipe()})
		}, ledger.CodeForbidden, "JobRegistered needs role coordinator"},
		{"job registered twice", func(e *env) []byte {
			return coord2.sign(e.ch.t, ledger.JobRegistered{JobID: "job-1", Recipe: e.c.testRecipe()})
		}, ledger.CodeAlreadyExists, "is already registered by " + newActor("coordinator", ledger.RoleCoordinator).id},
		{"recipe names a trainer as aggregator", func(e *env) []byte {
			r := e.c.testRecipe()
			r.Aggregators = []string{e.c.trainers[0].id}
			return e.c.coord.sign(e.ch.t, ledger.JobRegistered{JobID: "j2", Recipe: r})
		}, ledger.CodeInvalid, "is not a current aggregator member"},
		{"round of an unregistered job", func(e *env) []byte { return open(e, e.c.coord, "j2", 1, 1) }, ledger.CodeNotFound, `job "j2" is not registered`},
		{"round of another coordinator's job", func(e *env) []byte { return open(e, coord2, "job-1", 2, 1) }, ledger.CodeForbidden, "is owned by coordinator"},
		{"round number skipped", func(e *env) []byte { return open(e, e.c.coord, "job-1", 3, 1) }, ledger.CodeInvalid, "the next must be 2"},
		{"round number 2^64-1", func(e *env) []byte { return open(e, e.c.coord, "job-1", 1<<64-1, 1) }, ledger.CodeInvalid, "the next must be 2"},
		{"first round not 1", func(e *env) []byte {
			e.ch.mustApply(e.c.registerJob(e.ch.t, "j2"))
			return open(e, e.c.coord, "j2", 2, 1)
		}, ledger.CodeInvalid, "a job's first round is 1"},
		{"too many trainers", func(e *env) []byte {
			r := e.c.testRecipe()
			r.MaxTrainers = 2
			e.ch.mustApply(e.c.coord.sign(e.ch.t, ledger.JobRegistered{JobID: "j2", Recipe: r}))
			return open(e, e.c.coord, "j2", 1, 3)
		}, ledger.CodeInvalid, "selects 3 trainers; the recipe allows 1 to 2"},
		{"round with another strategy", func(e *env) []byte {
			return e.c.coord.sign(e.ch.t, ledger.RoundOpened{JobID: "job-1", Round: 2, ConfigDigest: digest("c"), BaseModel: e.fx.base, Strategy: "krum",
				Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(time.Hour)})
		}, ledger.CodeInvalid, `names strategy "krum"`},
		{"samples above the dataset's", func(e *env) []byte {
			return e.c.trainers[2].sign(e.ch.t, ledger.UpdateSubmitted{JobID: "job-1", Round: 1, UpdateDigest: digest("uc"), DatasetDigest: e.fx.datasets[2], Samples: 103})
		}, ledger.CodeInvalid, "samples 103 is more than the 102 samples dataset"},
		{"samples above the recipe's", func(e *env) []byte {
			r := e.c.testRecipe()
			r.MaxSamples = 10
			e.ch.mustApply(e.c.coord.sign(e.ch.t, ledger.JobRegistered{JobID: "j2", Recipe: r}), open(e, e.c.coord, "j2", 1, 3))
			return e.c.trainers[2].sign(e.ch.t, ledger.UpdateSubmitted{JobID: "j2", Round: 1, UpdateDigest: digest("uc"), DatasetDigest: e.fx.datasets[2], Samples: 11})
		}, ledger.CodeInvalid, "samples 11 is more than the 10 the recipe"},
		{"commit with another strategy", func(e *env) []byte { return commit(e, e.c.agg, "krum", nil, both(e)) }, ledger.CodeInvalid, `the recipe says "fedavg"`},
		{"commit with a noise seed", func(e *env) []byte {
			return commit(e, e.c.agg, "fedavg", map[string]string{"noise_seed": "42"}, both(e))
		}, ledger.CodeInvalid, `params["noise_seed"] is not in the job's recipe`},
		{"commit dropping an update", func(e *env) []byte { return commit(e, e.c.agg, "fedavg", nil, both(e)[:1]) }, ledger.CodeInvalid, "leaves out 1 submitted update(s)"},
		{"commit with made-up weights", func(e *env) []byte {
			cs := both(e)
			cs[0].Weight, cs[1].Weight = 0.9, 0.1
			return commit(e, e.c.agg, "fedavg", nil, cs)
		}, ledger.CodeInvalid, "fedavg weighs by samples, 100 of 200 gives 0.5"},
		{"commit by a non-designated aggregator", func(e *env) []byte { return commit(e, agg2, "fedavg", nil, both(e)) }, ledger.CodeForbidden, "is not designated"},
		{"fail by a non-designated aggregator", func(e *env) []byte {
			return agg2.sign(e.ch.t, ledger.RoundFailed{JobID: "job-1", Round: 1, Reason: "x"})
		}, ledger.CodeForbidden, "is not designated"},
		{"recipe base not registered", func(e *env) []byte {
			r := e.c.testRecipe()
			r.BaseModel = digest("unregistered model")
			return e.c.coord.sign(e.ch.t, ledger.JobRegistered{JobID: "j2", Recipe: r})
		}, ledger.CodeNotFound, "recipe.base_model " + digest("unregistered model") + " is not a registered model"},
		{"round 1 on another model than the recipe's", func(e *env) []byte {
			r := e.c.testRecipe()
			r.BaseModel = digest("other model")
			e.ch.mustApply(e.c.coord.sign(e.ch.t, ledger.ModelRegistered{Digest: digest("other model"), Name: "other", Licence: "mit", Source: "s"}),
				e.c.coord.sign(e.ch.t, ledger.JobRegistered{JobID: "j2", Recipe: r}))
			return open(e, e.c.coord, "j2", 1, 1)
		}, ledger.CodeInvalid, "round 1 of job \"j2\" must start from " + digest("other model") + ", the base model of the job's recipe; it names base model " + digest("base model")},
		{"round 2 not on round 1's committed model", func(e *env) []byte {
			e.ch.mustApply(commit(e, e.c.agg, "fedavg", nil, both(e)))
			return open(e, e.c.coord, "job-1", 2, 1)
		}, ledger.CodeInvalid, "must start from " + digest("m") + ", the model round 1 committed; it names base model " + digest("base model")},
		{"round 2 on another model after a failed round 1", func(e *env) []byte {
			e.ch.mustApply(e.c.coord.sign(e.ch.t, ledger.ModelRegistered{Digest: digest("other model"), Name: "other", Licence: "mit", Source: "s"}),
				e.c.agg.sign(e.ch.t, ledger.RoundFailed{JobID: "job-1", Round: 1, Reason: "too few"}))
			return e.c.coord.sign(e.ch.t, ledger.RoundOpened{JobID: "job-1", Round: 2, ConfigDigest: digest("c"), BaseModel: digest("other model"), Strategy: "fedavg",
				Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(time.Hour)})
		}, ledger.CodeInvalid, "must start from " + digest("base model") + ", the job's last committed model, or its base model if none (round 1 is failed"},
		{"reject by a non-designated aggregator", func(e *env) []byte {
			return agg2.sign(e.ch.t, ledger.UpdateRejected{JobID: "job-1", Round: 1, UpdateDigest: digest("ua"), Reason: "x"})
		}, ledger.CodeForbidden, "is not designated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t)
			e.ch.t = t
			bad := tc.tx(e)
			st := e.ch.db.State()
			before := dump(t, st, prefixApp)
			checkErr := e.ch.fsm.CheckTx(bad)
			res := e.ch.propose(bad)
			if res.Block != nil {
				t.Fatalf("bad tx made block %d", res.Block.Header.Height)
			}
			for _, err := range []error{checkErr, res.Results[0].Err} {
				var te *ledger.TxError
				if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want code %s and %q", err, tc.code, tc.want)
				}
			}
			if after := dump(t, st, prefixApp); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatal("state changed")
			}
		})
	}

	// The honest commit passes, and the job's record answers queries.
	e := setup(t)
	e.ch.mustApply(commit(e, e.c.agg, "fedavg", nil, both(e)))
	// Round 2 opens on round 1's model; after it fails, round 3 on it too.
	e.ch.mustApply(e.c.coord.sign(t, ledger.RoundOpened{JobID: "job-1", Round: 2, ConfigDigest: digest("c"), BaseModel: digest("m"), Strategy: "fedavg",
		Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(time.Hour)}))
	e.ch.mustApply(e.c.agg.sign(t, ledger.RoundFailed{JobID: "job-1", Round: 2, Reason: "too few"}))
	e.ch.mustApply(e.c.coord.sign(t, ledger.RoundOpened{JobID: "job-1", Round: 3, ConfigDigest: digest("c"), BaseModel: digest("m"), Strategy: "fedavg",
		Trainers: []string{e.c.trainers[0].id}, Deadline: t0.Add(time.Hour)}))
	j, err := e.ch.fsm.Job("job-1")
	if err != nil || j.Owner != e.c.coord.id || !j.Recipe.Designates(e.c.agg.id) {
		t.Fatalf("Job: %+v %v", j, err)
	}
	if _, err := e.ch.fsm.Job("nope"); !errors.Is(err, ledger.ErrRecordNotFound) {
		t.Fatalf("unknown job: %v", err)
	}
}
