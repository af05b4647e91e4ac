package devnet

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/trainer"
	"github.com/fedtune/fedtune/verifier"
)

// TestNetworkSpotCheckVerifiers: the devnet with four verifiers
// (--verifiers 4, quorum 2) sharing one base-model cache. verifier-3
// lies, passing trainer-3's forged update and rejecting the honest ones;
// verifier-4 is stopped before the job starts. trainer-3 submits other
// weights than its run's result. The two honest verifiers settle every
// update alone: trainer-3's is rejected (both name the same step) and it
// is suspended by the ledger for round 2 (suspend_rounds 1), which the
// coordinator reads before opening it; the liar's verdicts stay on the
// chain without deciding anything; both rounds commit on trainers 1
// and 2.
func TestNetworkSpotCheckVerifiers(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var liarID string
	n := prepare(t, ctx, Options{JobName: "spot4", Trainers: 3, Rounds: 2, LocalSteps: 3, MinTrainers: 2, PretrainSteps: 2,
		Verifiers: 4, VerifyQuorum: 2,
		TrainerBackend: func(i int) trainer.Backend {
			if i != 3 {
				return nil
			}
			be, err := trainer.NewBackend("")
			if err != nil {
				t.Fatal(err)
			}
			return forgedBackend{be}
		},
		VerifierReplayer: func(i int, _ verifier.Replayer) verifier.Replayer {
			if i != 3 {
				return nil
			}
			// The liar replays nothing: it passes the forger and
			// rejects everyone else at step 1.
			return verifier.ReplayFunc(func(_ context.Context, c verifier.Check) (verifier.Result, error) {
				if c.Update.Trainer == liarID {
					return verifier.Result{Passed: true}, nil
				}
				return verifier.Result{Step: 1, Reason: "a lie"}, nil
			})
		}})
	liarID = n.ID("trainer-3")
	names := n.VerifierNames()
	if want := []string{"verifier-1", "verifier-2", "verifier-3", "verifier-4"}; !slices.Equal(names, want) {
		t.Fatalf("verifier names %v, want %v", names, want)
	}
	if args := n.VerifierArgsOf("verifier-2"); !slices.Contains(args, "--cache") || !slices.Contains(args, n.path("verifier-cache")) {
		t.Fatalf("verifier-2's command %v does not name the shared cache", args)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	if len(nw.Verifiers) != 4 || nw.Verifier != nw.Verifiers[0] {
		t.Fatalf("%d verifier parts", len(nw.Verifiers))
	}
	if err := nw.Verifiers[3].Stop(); err != nil {
		t.Fatalf("stop verifier-4: %v", err)
	}
	var job map[string]any
	readYAML(t, n.JobFile, &job)
	v, _ := job["verify"].(map[string]any)
	if v == nil || v["quorum"] != 2 || len(v["by"].([]any)) != 4 {
		t.Fatalf("the job's verify section %v; want the four verifiers with quorum 2", job["verify"])
	}
	v["suspend_rounds"] = 1
	if err := writeYAML(n.JobFile, job); err != nil {
		t.Fatal(err)
	}
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	js, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if js.State != coordinator.JobDone || len(js.Rounds) != 2 || js.Rounds[0].Status != string(ledger.StatusCommitted) || js.Rounds[1].Status != string(ledger.StatusCommitted) {
		t.Fatalf("job ended %s (%s), rounds %+v; want rounds 1 and 2 committed", js.State, js.Detail, js.Rounds)
	}
	t1, t2, t3 := n.ID("trainer-1"), n.ID("trainer-2"), n.ID("trainer-3")
	honest := []string{n.ID("verifier-1"), n.ID("verifier-2")}
	liar, stopped := n.ID("verifier-3"), n.ID("verifier-4")
	r1, err := lc.Round(ctx, "spot4", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range r1.Updates {
		for _, vd := range u.Verdicts {
			if vd.Verifier == stopped {
				t.Errorf("a verdict from the stopped verifier-4: %+v", vd)
			}
			if vd.Verifier == liar {
				t.Logf("trainer %s: the liar's verdict (passed %v, step %d) is on the chain", u.Trainer[:8], vd.Passed, vd.Step)
			}
		}
		switch u.Trainer {
		case t1, t2:
			if !u.Drawn || !slices.Contains(honest, u.VerifiedBy) || u.Rejected || u.Agreeing(true, 0) < 2 {
				t.Errorf("honest trainer %s: verified by %q with %d passes, rejected %v (%s); want passed by the two honest verifiers",
					u.Trainer[:8], u.VerifiedBy, u.Agreeing(true, 0), u.Rejected, u.RejectReason)
			}
		case t3:
			c := u.Commitment
			if !u.Drawn || !u.Rejected || !slices.Contains(honest, u.RejectedBy) || c == nil || u.RejectStep != c.Steps || u.Agreeing(false, u.RejectStep) < 2 {
				t.Errorf("trainer-3 (forged): %+v; want rejected by the two honest verifiers naming its last step", u)
			}
		}
	}
	if len(r1.Contributors) != 2 || !contributes(r1, t1) || !contributes(r1, t2) {
		t.Fatalf("round 1 contributors %+v; want trainers 1 and 2", r1.Contributors)
	}
	ss, err := lc.Suspensions(ctx, "spot4", 0)
	if err != nil || len(ss) != 1 || ss[0].Trainer != t3 || ss[0].Until != 2 {
		t.Fatalf("suspensions %+v, %v; want trainer-3 through round 2", ss, err)
	}
	r2, err := lc.Round(ctx, "spot4", 2)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(r2.Trainers, t3) || len(r2.Contributors) != 2 {
		t.Fatalf("round 2 selects %v with contributors %+v; want trainers 1 and 2 only", r2.Trainers, r2.Contributors)
	}
	// The verifiers fetched the base model into one cache, whole, and
	// left nothing else there.
	jr, err := lc.Job(ctx, "spot4")
	if err != nil {
		t.Fatal(err)
	}
	cache := n.path("verifier-cache")
	if got, err := model.DigestPath(filepath.Join(cache, "model-"+jr.Recipe.BaseModel)); err != nil || got != jr.Recipe.BaseModel {
		t.Errorf("the shared cache's base model: %s (%v), want %s", got, err, jr.Recipe.BaseModel)
	}
	ents, err := os.ReadDir(cache)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if want := []string{"model-" + jr.Recipe.BaseModel}; !slices.Equal(left, want) {
		t.Errorf("the shared cache holds %v, want %v", left, want)
	}
	for _, name := range names[:2] {
		if _, err := os.Stat(n.path(name, "models")); err == nil {
			t.Errorf("%s has a cache of its own", name)
		}
	}
	if jr.Recipe.Verify.Quorum != 2 || jr.Recipe.Verify.Timeout <= 0 {
		t.Errorf("recipe verify %+v; want quorum 2 and the coordinator's timeout", jr.Recipe.Verify)
	}
}
