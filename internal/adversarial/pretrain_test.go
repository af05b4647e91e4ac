package adversarial

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

// Lies about a pretrain (DiLoCo) job told to the ledger: a coordinator
// registering a pretrain recipe without inner steps, with an absurd H or
// with a LoRA adapter; an aggregator committing a diloco round with an
// outer learning rate or momentum the recipe does not say, or a server
// state that is no digest. Each is refused, saying what was wrong, and the
// chain does not move.
func TestAttackPretrainRecipeAndCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	r := roundsSetup(t, ctx)
	agg := r.nw.ID("aggregator")
	// The shipped job's pinned init config and seed.
	jf, err := coordinator.LoadJob("../../configs/jobs/pretrain-diloco.yaml")
	if err != nil {
		t.Fatal(err)
	}
	good := func() ledger.RoundRecipe {
		return ledger.RoundRecipe{Strategy: "diloco", Params: map[string]string{"learning_rate": "0.7", "momentum": "0.9"},
			Compression: "none", MinTrainers: 1, MaxTrainers: 3, Aggregators: []string{agg}, BaseModel: r.base,
			Mode: ledger.RecipePretrain, InnerSteps: 50, InitConfig: jf.Model.InitDigest, InitSeed: coordinator.InitSeed(jf.Seed)}
	}
	nonce0 := payloadNonce(t, ctx, r.c, r.nw.ID("coordinator"))
	for _, tc := range []struct {
		name string
		edit func(*ledger.RoundRecipe)
		want string
	}{
		{"H zero", func(rc *ledger.RoundRecipe) { rc.InnerSteps = 0 }, "recipe.inner_steps 0: a pretrain recipe needs 1 to 1000000"},
		{"H negative", func(rc *ledger.RoundRecipe) { rc.InnerSteps = -50 }, "recipe.inner_steps -50: a pretrain recipe needs 1 to 1000000"},
		{"H absurd", func(rc *ledger.RoundRecipe) { rc.InnerSteps = 1 << 30 }, "recipe.inner_steps 1073741824: a pretrain recipe needs 1 to 1000000"},
		{"H without pretrain", func(rc *ledger.RoundRecipe) { rc.Mode = "" }, `recipe.inner_steps 50: only a "pretrain" recipe has inner steps`},
		{"unknown mode", func(rc *ledger.RoundRecipe) { rc.Mode = "pretrain-lora" }, `recipe.mode "pretrain-lora": want "pretrain" or none`},
		{"pretrain with an adapter", func(rc *ledger.RoundRecipe) { rc.InitialAdapter = digestOf("adapter") }, "a pretrain recipe trains every weight, it has no adapter"},
		{"lr not a number", func(rc *ledger.RoundRecipe) { rc.Params["learning_rate"] = "fast" }, `recipe.params["learning_rate"] "fast" is not a finite number`},
		{"init config by path", func(rc *ledger.RoundRecipe) { rc.InitConfig = "../models/tiny.yaml" }, "recipe.init_config"},
		{"no init config", func(rc *ledger.RoundRecipe) { rc.InitConfig = "" }, "recipe.init_config: a pretrain recipe names the model config its initial model is drawn from, by digest"},
		{"init config on a fine-tune", func(rc *ledger.RoundRecipe) { rc.Mode, rc.InnerSteps = "", 0 }, `only a "pretrain" recipe initialises its model`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := good()
			tc.edit(&rc)
			// Signed as raw bytes: the client would not sign it.
			body, err := json.Marshal(ledger.JobRegistered{JobID: "adv-pretrain-" + strings.ReplaceAll(tc.name, " ", "-"), Recipe: rc})
			if err != nil {
				t.Fatal(err)
			}
			signer := r.nw.ID("coordinator")
			payload := fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, r.nw.ChainID, signer,
				payloadNonce(t, ctx, r.c, signer)+1, ledger.TypeJobRegistered, body)
			before := waitSettled(t, ctx, r.nw.Net)
			_, err = r.c.SubmitWait(ctx, payloadSignRaw(r.nw.Keys["coordinator"], payload))
			if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a rejection containing %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
			requireUnchanged(t, ctx, r.nw.Net, before)
		})
	}
	// The signer's nonce is where the setup left it: nothing was applied.
	if got := payloadNonce(t, ctx, r.c, r.nw.ID("coordinator")); got != nonce0 {
		t.Errorf("coordinator nonce %d after the attacks, want %d", got, nonce0)
	}

	// A well-formed pretrain job, one round with trainer-1's update.
	const job = "adv-pretrain"
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: job, Recipe: good()})
	r.must(t, ctx, "coordinator", ledger.RoundOpened{JobID: job, Round: 1, ConfigDigest: digestOf("pretrain config"), BaseModel: r.base,
		Strategy: "diloco", Trainers: []string{r.nw.ID("trainer-1")}, Deadline: time.Now().Add(time.Hour)})
	u := digestOf("pretrain delta of trainer-1")
	r.must(t, ctx, "trainer-1", ledger.UpdateSubmitted{JobID: job, Round: 1, UpdateDigest: u, DatasetDigest: r.datasets["trainer-1"], Samples: roundsSamples})
	commit := func(params map[string]string) ledger.RoundCommitted {
		return ledger.RoundCommitted{JobID: job, Round: 1, ModelDigest: digestOf("pretrain global 1"), Strategy: "diloco", Params: params,
			Contributors: []ledger.Contribution{{Trainer: r.nw.ID("trainer-1"), UpdateDigest: u, Weight: 1}}}
	}
	state := digestOf("momentum after round 1")
	for _, tc := range []struct {
		name   string
		params map[string]string
		want   string
	}{
		{"absurd outer lr", map[string]string{"learning_rate": "700", "momentum": "0.9", ledger.ParamServerState: state}, `params["learning_rate"] is "700", the job's recipe says "0.7"`},
		{"no momentum", map[string]string{"learning_rate": "0.7", ledger.ParamServerState: state}, `params["momentum"] is missing; the job's recipe says "0.9"`},
		{"server state not a digest", map[string]string{"learning_rate": "0.7", "momentum": "0.9", ledger.ParamServerState: "momentum-r1"}, "params[server_state]"},
		{"as fedavg", nil, "strategy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := commit(tc.params)
			if tc.params == nil {
				c.Strategy = "fedavg"
			}
			r.attack(t, ctx, "aggregator", c, tc.want)
		})
	}
	// The honest commit, its server state named by digest, goes through.
	r.must(t, ctx, "aggregator", commit(map[string]string{"learning_rate": "0.7", "momentum": "0.9", ledger.ParamServerState: state}))
	rd, err := r.c.Round(ctx, job, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rd.Status != ledger.StatusCommitted || rd.Params[ledger.ParamServerState] != state {
		t.Fatalf("round 1 of %s: %s with params %v, want committed with server_state %s", job, rd.Status, rd.Params, state)
	}

	// A coordinator runs the shipped pretrain job file but starts round 1
	// from a model of its choosing, not the one the job's seed
	// initialises. The ledger cannot know (it holds no training code); the
	// audit with the job file recomputes the initial model and names it.
	const other = "adv-pretrain-other-start"
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: other, Recipe: good()})
	r.must(t, ctx, "coordinator", ledger.RoundOpened{JobID: other, Round: 1, ConfigDigest: jf.Digest(), BaseModel: r.base,
		Strategy: "diloco", Trainers: []string{r.nw.ID("trainer-1")}, Deadline: time.Now().Add(time.Hour)})
	// The shipped job itself, registered with its pinned config and seed.
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: jf.Name, Recipe: good()})
	exportPath := filepath.Join(t.TempDir(), "chain.fedtune")
	exportChain(t, ctx, r.c, r.nw.Net, exportPath)
	f, err := os.Open(exportPath)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.ReadExport(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	init, err := coordinator.InitialModel(jf)
	if err != nil {
		t.Fatal(err)
	}
	initDigest, err := init.Digest()
	if err != nil {
		t.Fatal(err)
	}
	_, err = audit.Verify(ctx, e, audit.VerifyOptions{Jobs: []string{jf.Source}})
	wantAudit := fmt.Sprintf("pretrain job %q round 1 starts from %s, but the job file's seed 11 initialises", other, r.base)
	if err == nil || !strings.Contains(err.Error(), wantAudit) || !strings.Contains(err.Error(), initDigest) {
		t.Fatalf("audit: %v, want it to say %q and name %s", err, wantAudit, initDigest)
	}
	t.Logf("audit: %v", err)

	// An auditor is handed the shipped job's file beside a model config
	// that is not the one the job pinned (the same path in another
	// folder, one width changed). The audit does not recompute from it: it
	// names the file and the digest the ledger records.
	dir := t.TempDir()
	tiny, err := os.ReadFile("../../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "models"), 0o755); err != nil {
		t.Fatal(err)
	}
	wider := filepath.Join(dir, "models", "tiny.yaml")
	if err := os.WriteFile(wider, []byte(strings.Replace(string(tiny), "intermediate_size:", "intermediate_size: 200 #", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "jobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(jf.Source)
	if err != nil {
		t.Fatal(err)
	}
	wrongJob := filepath.Join(dir, "jobs", "pretrain-diloco.yaml")
	if err := os.WriteFile(wrongJob, src, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = audit.Verify(ctx, e, audit.VerifyOptions{Jobs: []string{wrongJob}})
	wantAudit = fmt.Sprintf("pretrain job %q: the job file %s has model.init %s, a model config of digest", jf.Name, wrongJob, filepath.Join(dir, "jobs", "../models/tiny.yaml"))
	if err == nil || !strings.Contains(err.Error(), wantAudit) || !strings.Contains(err.Error(), "records init_config \""+jf.Model.InitDigest+"\"") {
		t.Fatalf("audit with another config: %v, want it to say %q and name %s", err, wantAudit, jf.Model.InitDigest)
	}
	t.Logf("audit with another config: %v", err)
}

// anotherStart is a trainer that trains each pretrain task from a model
// of its own (the job's architecture, another seed) instead of the
// round's global model, and says so in its update (__metadata__
// fedtune.base).
type anotherStart struct {
	be     trainer.Backend
	dir    string
	digest string
}

func (a *anotherStart) Fit(ctx context.Context, t trainer.Task, d trainer.Data) (trainer.Update, error) {
	t.ModelDir, t.Base = a.dir, a.digest
	return a.be.Fit(ctx, t, d)
}

// A trainer in a DiLoCo pretrain job sends a delta computed from another
// starting model. The aggregator rejects it, naming the model it came from
// and the round's base; the rejection is on the ledger and the round
// commits the honest trainer's step alone. The offline audit re-checks the
// rejected update against the round's base and confirms the rejection.
func TestAttackPretrainDeltaFromAnotherModel(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx := testContext(t, 4*time.Minute)
	src, err := os.ReadFile("../../configs/jobs/pretrain-diloco.yaml")
	if err != nil {
		t.Fatal(err)
	}
	models, err := filepath.Abs("../../configs/models")
	if err != nil {
		t.Fatal(err)
	}
	jobText := strings.Replace(strings.Replace(string(src), "init: ../models/", "init: "+models+"/", 1), "  min: 2\n", "  min: 1\n", 1)
	jobPath := filepath.Join(t.TempDir(), "pretrain.yaml")
	if err := os.WriteFile(jobPath, []byte(jobText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := model.LoadConfigYAML(filepath.Join(models, "tiny.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := model.New(cfg, 424242)
	if err != nil {
		t.Fatal(err)
	}
	liar := &anotherStart{dir: filepath.Join(t.TempDir(), "other")}
	if liar.digest, err = other.Save(liar.dir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	if liar.be, err = trainer.NewBackend(trainer.DeviceCPU); err != nil {
		t.Fatal(err)
	}
	n := prepareNet(t, ctx, devnet.Options{Job: jobPath, JobName: "adv-pretrain-start", Trainers: 2, MinTrainers: 1, Rounds: 1, LocalSteps: 5,
		TrainData: "datasets/testdata/english/train.txt",
		TrainerBackend: func(i int) trainer.Backend {
			if i == 2 {
				return liar
			}
			return nil
		}})
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 1 {
		t.Fatalf("job ended %s (%s) with %d rounds, want done with 1", st.State, st.Detail, len(st.Rounds))
	}
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rd, err := c.Round(ctx, "adv-pretrain-start", 1)
	if err != nil {
		t.Fatal(err)
	}
	liarID := n.ID("trainer-2")
	var lie *ledger.Update
	for i, u := range rd.Updates {
		if u.Trainer == liarID {
			lie = &rd.Updates[i]
		}
	}
	if lie == nil || !lie.Rejected {
		t.Fatalf("round 1: updates %+v; want trainer-2's update rejected", rd.Updates)
	}
	want := "trained from model " + liar.digest + " (__metadata__ " + aggregator.MetaBase + "), but the round's base is " + n.BaseDigest
	if !strings.Contains(lie.RejectReason, want) {
		t.Fatalf("rejection reason %q, want it to say %q", lie.RejectReason, want)
	}
	if rd.Status != ledger.StatusCommitted || len(rd.Contributors) != 1 || rd.Contributors[0].Trainer != n.ID("trainer-1") || rd.Params[ledger.ParamServerState] == "" {
		t.Fatalf("round 1: %s, contributors %+v, params %v; want committed by trainer-1 alone with a server_state", rd.Status, rd.Contributors, rd.Params)
	}
	t.Logf("rejected: %s", lie.RejectReason)

	// The audit re-checks the rejection against the round's base.
	exportPath := filepath.Join(t.TempDir(), "chain.fedtune")
	exportChain(t, ctx, c, n, exportPath)
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
	rep, err := audit.Verify(ctx, e, audit.VerifyOptions{Artifacts: n.Dir + "/coordinator/artifacts", Jobs: []string{n.JobFile}})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.RejectionsChecked != 1 || rep.Reaggregated != 1 {
		t.Fatalf("verify: %d rejections checked, %d rounds re-aggregated; want 1 and 1", rep.RejectionsChecked, rep.Reaggregated)
	}
}

// exportChain writes the chain as `fedtune audit export` does.
func exportChain(t *testing.T, ctx context.Context, c *client.Client, n *devnet.Net, path string) {
	t.Helper()
	g, err := os.ReadFile(n.GenesisPath())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ew, err := audit.NewExportWriter(f, g)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Blocks(ctx, 0, false, func(vb *client.VerifiedBlock) error { return ew.WriteBlock(vb.Block) }); err != nil {
		t.Fatal(err)
	}
	if err := ew.Close(); err != nil {
		t.Fatal(err)
	}
}
