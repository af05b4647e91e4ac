package adversarial

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// TestAttackRoundEvaluated: lies about a round's held-out evaluation and
// its contribution scores, on a real three-node ledger. A RoundEvaluated
// from a coordinator that does not own the job, of a round still open, of
// a round never opened, naming another model than the round committed,
// scoring a selected trainer that contributed nothing, a second one for
// the same round, and NaN or infinite values: each is refused with its
// reason and the chain does not move. The honest evaluation goes through
// and is what the round's record shows.
func TestAttackRoundEvaluated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	r := roundsSetup(t, ctx)
	model := digestOf("evaluated model")
	eval := func(m string, scored ...string) ledger.RoundEvaluated {
		ev := ledger.RoundEvaluated{JobID: r.job, Round: 1, ModelDigest: m, EvalDigest: digestOf("eval set"), MeanNLL: 2.25, Tokens: 640}
		for i, n := range scored {
			ev.Scores = append(ev.Scores, ledger.ContributionScore{Trainer: r.nw.ID(n), LossRemoved: 0.125 * float64(i+1)})
		}
		return ev
	}

	t.Run("evaluation of a round still open", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", eval(model, "trainer-1"), "round 1 of job", "is open, not committed")
	})

	st, err := aggregator.New("krum", nil)
	if err != nil {
		t.Fatal(err)
	}
	params := map[string]string{}
	for k, v := range st.Params() {
		params[k] = ledger.FormatParam(v)
	}
	r.must(t, ctx, "aggregator", ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: model, Strategy: "krum", Params: params,
		Contributors: []ledger.Contribution{
			{Trainer: r.nw.ID("trainer-1"), UpdateDigest: r.updates["trainer-1"], Weight: 1},
			{Trainer: r.nw.ID("trainer-2"), UpdateDigest: r.updates["trainer-2"], Weight: 0}}})

	t.Run("evaluation by a coordinator that does not own the job", func(t *testing.T) {
		r.attack(t, ctx, "coordinator-2", eval(model, "trainer-1"), "is owned by coordinator "+r.nw.ID("coordinator"), "may not evaluate its rounds")
	})
	t.Run("evaluation signed by the aggregator", func(t *testing.T) {
		r.attack(t, ctx, "aggregator", eval(model, "trainer-1"), "RoundEvaluated", "coordinator")
	})
	t.Run("evaluation of a round never opened", func(t *testing.T) {
		ev := eval(model, "trainer-1")
		ev.Round = 2
		r.attack(t, ctx, "coordinator", ev, "round 2 of job", "was never opened")
	})
	t.Run("evaluation naming another model", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", eval(digestOf("a better-looking model"), "trainer-1"), "committed model "+model, "the evaluation names model")
	})
	t.Run("evaluation scoring a selected trainer that contributed nothing", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", eval(model, "trainer-1", "trainer-3"), "scores[1]: trainer "+r.nw.ID("trainer-3")+" is not a contributor")
	})

	// NaN and infinities cannot be written by SignTx (it refuses them), so
	// the lying coordinator signs payloads of its own.
	c := r.c
	key := r.nw.Keys["coordinator"]
	signer := r.nw.ID("coordinator")
	before := waitSettled(t, ctx, r.nw.Net)
	nonce := payloadNonce(t, ctx, c, signer) + 1
	for i, a := range []struct{ name, nll, score, want string }{
		{"NaN loss", "NaN", "0.5", `invalid character 'N' at start of value within "/body/mean_nll"`},
		{"infinite loss", "1e999", "0.5", "RoundEvaluated body"},
		{"infinite score", "2.25", "-1e400", "RoundEvaluated body"},
		{"negative loss", "-2.25", "0.5", "mean_nll -2.25 is negative"},
	} {
		t.Run(a.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"job_id":%q,"round":1,"model_digest":%q,"eval_digest":%q,"mean_nll":%s,"tokens":640,"scores":[{"trainer":%q,"loss_removed":%s}]}`,
				r.job, model, digestOf("eval set"), a.nll, r.nw.ID("trainer-1"), a.score)
			payload := fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, r.nw.ChainID, signer, nonce+uint64(i), ledger.TypeRoundEvaluated, body)
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_, err := c.SubmitWait(sctx, payloadSignRaw(key, payload))
			if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), a.want) {
				t.Fatalf("error %v, want a rejection containing %q", err, a.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	requireUnchanged(t, ctx, r.nw.Net, before)
	if got := payloadNonce(t, ctx, c, signer); got != nonce-1 {
		t.Errorf("coordinator nonce %d after the attacks, want %d", got, nonce-1)
	}
	if rd, err := c.Round(ctx, r.job, 1); err != nil || rd.Evaluation != nil {
		t.Fatalf("round 1 after the attacks: %+v %v, want no evaluation", rd, err)
	}

	// The honest evaluation goes through, once.
	honest := eval(model, "trainer-1", "trainer-2")
	r.must(t, ctx, "coordinator", honest)
	rd, err := c.Round(ctx, r.job, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev := rd.Evaluation; ev == nil || ev.MeanNLL != honest.MeanNLL || ev.Tokens != honest.Tokens || len(ev.Scores) != 2 || ev.Coordinator != signer {
		t.Fatalf("round 1 evaluation %+v", rd.Evaluation)
	}
	t.Run("second evaluation of the round", func(t *testing.T) {
		ev := eval(model, "trainer-1")
		ev.MeanNLL = 0.01
		r.attack(t, ctx, "coordinator", ev, "round 1 of job", "was already evaluated at height")
	})
}
