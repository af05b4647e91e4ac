package devnet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

// TestNoRaceNetworkPretrain runs configs/jobs/pretrain-diloco.yaml for two
// rounds on a whole devnet of two trainers, each holding half of the
// shipped English text: round 1 starts from the model the job's seed
// initialises (registered on the ledger as the job's base), every trainer
// runs the inner steps and sends its delta from the round's base, and the
// aggregator takes DiLoCo's outer Nesterov step. The eval loss falls round
// by round, each commit names its server state (the momentum buffer) by
// digest, the state is in the artifacts, and an offline audit re-runs both
// rounds to the committed model and state digests.
func TestNoRaceNetworkPretrain(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src, err := os.ReadFile("../../configs/jobs/pretrain-diloco.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Shorter windows; the copy names model.init absolutely.
	job := strings.Replace(string(src), "  seq_len: 64\n", "  seq_len: 32\n", 1)
	models, err := filepath.Abs("../../configs/models")
	if err != nil {
		t.Fatal(err)
	}
	job = strings.Replace(job, "init: ../models/", "init: "+models+"/", 1)
	jobPath := filepath.Join(t.TempDir(), "pretrain.yaml")
	if err := os.WriteFile(jobPath, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	n := prepare(t, ctx, Options{Job: jobPath, JobName: "pretrain", Trainers: 2, MinTrainers: 2, Rounds: 2, LocalSteps: 15,
		TrainData: "datasets/testdata/english/train.txt", EvalData: "datasets/testdata/english/eval.txt"})
	initModel, err := coordinator.InitialModel(mustLoadJob(t, n.JobFile))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := initModel.Digest(); d != n.BaseDigest {
		t.Fatalf("the devnet's base %s is not the job's initial model %s", n.BaseDigest, d)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 2 {
		t.Fatalf("job ended %s (%s) with %d rounds, want done with 2", st.State, st.Detail, len(st.Rounds))
	}
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	exportPath := filepath.Join(t.TempDir(), "chain.fedtune")
	txs := auditExportChain(t, ctx, lc, n.path("genesis.yaml"), exportPath)
	lc.Close()

	var recipe *ledger.RoundRecipe
	registered := map[string]ledger.ModelRegistered{}
	opened := map[uint64]ledger.RoundOpened{}
	commits := map[uint64]ledger.RoundCommitted{}
	var updates []ledger.UpdateSubmitted
	for _, tx := range txs {
		switch b := tx.tx.Body.(type) {
		case ledger.JobRegistered:
			recipe = &b.Recipe
		case ledger.ModelRegistered:
			registered[b.Digest] = b
		case ledger.RoundOpened:
			opened[b.Round] = b
		case ledger.RoundCommitted:
			commits[b.Round] = b
		case ledger.UpdateSubmitted:
			updates = append(updates, b)
		case ledger.UpdateRejected, ledger.RoundFailed:
			t.Errorf("unexpected %s", b.TxType())
		}
	}
	if recipe == nil || recipe.Mode != ledger.RecipePretrain || recipe.InnerSteps != 15 || recipe.Strategy != "diloco" || recipe.BaseModel != n.BaseDigest {
		t.Fatalf("recipe %+v: want a diloco pretrain recipe, 15 inner steps, base %s", recipe, n.BaseDigest)
	}
	if jf := mustLoadJob(t, n.JobFile); recipe.InitConfig != jf.Model.InitDigest || recipe.InitSeed != coordinator.InitSeed(jf.Seed) {
		t.Fatalf("recipe init_config %q, init_seed %d; want the job's pinned config %s and seed %d", recipe.InitConfig, recipe.InitSeed, jf.Model.InitDigest, coordinator.InitSeed(jf.Seed))
	}
	if p, ok := audit.ArtifactPath(n.path("coordinator", "artifacts"), recipe.InitConfig); !ok {
		t.Fatalf("init config %s is not in the coordinator's artifacts", recipe.InitConfig)
	} else if data, err := os.ReadFile(p); err != nil {
		t.Fatal(err)
	} else if _, err := coordinator.InitialModelFrom(data, recipe.InitConfig, recipe.InitSeed); err != nil {
		t.Fatalf("init config artifact: %v", err)
	}
	// Each trainer kept its inner AdamW state across the two rounds.
	optFiles, err := filepath.Glob(filepath.Join(n.Dir, "*", "work", "optstate", "pretrain.safetensors"))
	if err != nil || len(optFiles) != 2 {
		t.Fatalf("inner optimizer state files %v (%v), want one per trainer", optFiles, err)
	}
	for _, p := range optFiles {
		st, round, err := trainer.LoadOptState(p, "pretrain")
		if err != nil || round != 2 || st.Steps != 30 {
			t.Fatalf("%s: %v; round %d; want the state after round 2, 30 AdamW steps", p, err, round)
		}
	}
	if m, ok := registered[n.BaseDigest]; !ok || !strings.Contains(m.Source, "fedtune init: tiny.yaml") {
		t.Fatalf("initial model %s registered as %+v", n.BaseDigest, m)
	}
	store := n.path("coordinator", "artifacts")
	base := n.BaseDigest
	states := map[string]bool{}
	for r := uint64(1); r <= 2; r++ {
		o, c := opened[r], commits[r]
		if o.BaseModel != base {
			t.Errorf("round %d opened on %s, want %s", r, o.BaseModel, base)
		}
		s := c.Params[ledger.ParamServerState]
		if c.Params["learning_rate"] != recipe.Params["learning_rate"] || c.Params["momentum"] != recipe.Params["momentum"] || s == "" {
			t.Fatalf("round %d commit params %v: want the recipe's %v and a server_state", r, c.Params, recipe.Params)
		}
		p, ok := audit.ArtifactPath(store, s)
		if !ok {
			t.Fatalf("round %d server state %s is not in the artifacts", r, s)
		}
		f, err := safetensors.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := f.Digest(); d != s {
			t.Errorf("round %d server state file has digest %s, the ledger says %s", r, d, s)
		}
		if _, ok := f.Info("momentum/model.embed_tokens.weight"); !ok {
			t.Errorf("round %d server state lacks the momentum of model.embed_tokens.weight", r)
		}
		f.Close()
		states[s] = true
		base = c.ModelDigest
	}
	if len(states) != 2 {
		t.Errorf("the two rounds record one server state: %v", states)
	}
	if len(updates) != 4 {
		t.Fatalf("%d updates, want 2 a round", len(updates))
	}
	for _, u := range updates {
		p, ok := audit.ArtifactPath(store, u.UpdateDigest)
		if !ok {
			t.Fatalf("update %s is not in the store", u.UpdateDigest)
		}
		up, err := aggregator.OpenUpdate(p)
		if err != nil {
			t.Fatal(err)
		}
		if up.Kind() != aggregator.KindDelta || up.Base() != opened[u.Round].BaseModel {
			t.Errorf("round %d update %s: kind %q from %q; want a delta from the round's base %s", u.Round, u.UpdateDigest, up.Kind(), up.Base(), opened[u.Round].BaseModel)
		}
		up.Close()
	}

	// The eval loss falls: initial model, round 1, round 2.
	loss := []float64{}
	for _, d := range []string{"", commits[1].ModelDigest, commits[2].ModelDigest} {
		p := ""
		if d != "" {
			p = filepath.Join(t.TempDir(), d)
			if err := n.Fetch(ctx, d, p); err != nil {
				t.Fatal(err)
			}
		}
		res, err := n.Eval(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		loss = append(loss, res.MeanNLL)
	}
	t.Logf("eval loss: initial %.4f, round 1 %.4f, round 2 %.4f", loss[0], loss[1], loss[2])
	if !(loss[1] < loss[0] && loss[2] < loss[1]) {
		t.Errorf("eval loss does not fall: %v", loss)
	}

	nw.Stop()
	f, err := os.Open(exportPath)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.ReadExport(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(ctx, e, audit.VerifyOptions{Artifacts: store, Jobs: []string{n.JobFile}, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Rounds != 2 || rep.Reaggregated != 2 || rep.InitModels != 1 {
		t.Errorf("verify: %d committed rounds, %d re-aggregated, %d initial models recomputed; want 2, 2 and 1", rep.Rounds, rep.Reaggregated, rep.InitModels)
	}
}

func mustLoadJob(t *testing.T, path string) *coordinator.Job {
	t.Helper()
	j, err := coordinator.LoadJob(path)
	if err != nil {
		t.Fatal(err)
	}
	return j
}
