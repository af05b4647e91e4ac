package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// A digest is a model or an update, never both: a ModelRegistered of a
// submitted update would make that update a model every member may
// download, and an UpdateSubmitted of a model's digest would claim the
// model's weights as a trainer's own. Each refusal names why and changes
// no state.
func TestModelAndUpdateDigestsStayApart(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fx := c.setupRound(t, ch)
	a, b := c.trainers[0], c.trainers[1]
	u, v := digest("update of a"), digest("update of b")
	ch.mustApply(fx.submit(t, a, 0, 1, u))

	refused := func(name string, want []string, txs ...[]byte) {
		t.Helper()
		before := dump(t, ch.fsm.st, prefixApp)
		res := ch.propose(txs...)
		last := res.Results[len(res.Results)-1].Err
		var te *ledger.TxError
		if !errors.As(last, &te) || te.Code != ledger.CodeInvalid {
			t.Fatalf("%s: %v; want a rejection with code %s", name, last, ledger.CodeInvalid)
		}
		for _, w := range want {
			if !strings.Contains(last.Error(), w) {
				t.Fatalf("%s: %v; want the reason to say %q", name, last, w)
			}
		}
		for i, r := range res.Results[:len(res.Results)-1] {
			if r.Err != nil {
				t.Fatalf("%s: tx %d: %v", name, i, r.Err)
			}
		}
		if len(txs) == 1 {
			if after := dump(t, ch.fsm.st, prefixApp); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("%s: the rejected tx changed the state", name)
			}
		}
		t.Logf("%s: %v", name, last)
	}

	refused("model of a submitted update", []string{"model " + u, "is the update trainer " + a.id + ` submitted to round 1 of job "job-1"`, "cannot be registered as a model"},
		c.coord.sign(t, ledger.ModelRegistered{Digest: u, Name: "stolen", Licence: "l", Source: "s"}))
	// Within one block: the model's check sees the update before it.
	refused("update and model in one block", []string{"is the update trainer " + b.id},
		fx.submit(t, b, 1, 1, v), c.coord.sign(t, ledger.ModelRegistered{Digest: v, Name: "stolen", Licence: "l", Source: "s"}))
	refused("update of the base model", []string{"update " + fx.base + " is already recorded as a model (registered by " + c.coord.id},
		fx.submit(t, c.trainers[2], 2, 1, fx.base))

	// A committed model cannot come back as an update either.
	model := digest("model 1")
	ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: fx.job, Round: 1, ModelDigest: model, Strategy: "fedavg",
		Contributors: []ledger.Contribution{{Trainer: a.id, UpdateDigest: u, Weight: 0.5}, {Trainer: b.id, UpdateDigest: v, Weight: 0.5}}}))
	ch.mustApply(c.coord.sign(t, ledger.RoundOpened{JobID: fx.job, Round: 2, ConfigDigest: digest("job config"), BaseModel: model,
		Strategy: "fedavg", Trainers: []string{a.id, b.id}, Deadline: t0.Add(24 * time.Hour)}))
	refused("update of the committed model", []string{"update " + model + ` is already recorded as a model (committed by round 1 of job "job-1"`},
		fx.submit(t, a, 0, 2, model))

	// Round 2's model cannot be round 1's update either (its own round's
	// update, with one contributor, it may be).
	u2 := digest("update of a, round 2")
	ch.mustApply(fx.submit(t, a, 0, 2, u2))
	refused("model of another round's update", []string{"round 2 of job \"job-1\" commits model " + v + ", the update trainer " + b.id + ` submitted to round 1 of job "job-1"`},
		c.agg.sign(t, ledger.RoundCommitted{JobID: fx.job, Round: 2, ModelDigest: v, Strategy: "fedavg",
			Contributors: []ledger.Contribution{{Trainer: a.id, UpdateDigest: u2, Weight: 1}}}))
	ch.mustApply(c.agg.sign(t, ledger.RoundCommitted{JobID: fx.job, Round: 2, ModelDigest: u2, Strategy: "fedavg",
		Contributors: []ledger.Contribution{{Trainer: a.id, UpdateDigest: u2, Weight: 1}}}))

	// Unrelated digests still register and submit.
	ch.mustApply(c.coord.sign(t, ledger.ModelRegistered{Digest: digest("another base"), Name: "m", Licence: "l", Source: "s"}))
}
