package devnet

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
)

// A DP LoRA round on the devnet: the recipe on the chain records clip and
// noise multiplier and no seed; the noise is secret, so the committed
// model cannot be re-derived, yet `audit verify` (without a job file)
// re-runs the clipped, un-noised aggregate and finds the difference the
// size the recipe's noise gives.
func TestNoRaceNetworkDPAudit(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	jy, err := os.ReadFile("../../configs/jobs/demo-lora.yaml")
	if err != nil {
		t.Fatal(err)
	}
	jy2 := bytes.Replace(jy, []byte("  clip: 0\n  noise_multiplier: 0\n"), []byte("  clip: 0.5\n  noise_multiplier: 1.1\n"), 1)
	if bytes.Equal(jy, jy2) {
		t.Fatal("demo-lora.yaml has no privacy block to edit")
	}
	// The copy lives elsewhere: name the eval data by its absolute path.
	evalData, err := filepath.Abs("../../datasets/testdata/tasks/eval.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	jy2 = bytes.Replace(jy2, []byte("data: ../../datasets/testdata/tasks/eval.jsonl"), []byte("data: "+evalData), 1)
	jobFile := filepath.Join(t.TempDir(), "dp.yaml")
	if err := os.WriteFile(jobFile, jy2, 0o644); err != nil {
		t.Fatal(err)
	}
	n := prepare(t, ctx, Options{Job: jobFile, JobName: "dp", Rounds: 1, LocalSteps: 3})
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
	if st.State != coordinator.JobDone || st.Model == "" {
		t.Fatalf("job ended %s (%s), model %q; want done", st.State, st.Detail, st.Model)
	}
	exportPath := filepath.Join(t.TempDir(), "chain.fedtune")
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	txs := auditExportChain(t, ctx, lc, n.path("genesis.yaml"), exportPath)
	lc.Close()
	var recipe *ledger.RoundRecipe
	for _, tx := range txs {
		switch b := tx.tx.Body.(type) {
		case ledger.JobRegistered:
			recipe = &b.Recipe
		case ledger.RoundCommitted:
			for k := range b.Params {
				if k != "clip" && k != "noise_multiplier" && k != ledger.ParamServerState {
					t.Errorf("RoundCommitted records parameter %s=%s", k, b.Params[k])
				}
			}
		}
	}
	if recipe == nil || recipe.Clip != 0.5 || recipe.NoiseMultiplier != 1.1 || recipe.InitialAdapter == "" {
		t.Fatalf("recipe on the chain: %+v, want clip 0.5, noise multiplier 1.1 and an initial adapter", recipe)
	}
	store := n.path("coordinator", "artifacts")
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
	rep, err := audit.Verify(ctx, e, audit.VerifyOptions{Artifacts: store, Logger: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil || rep.Reaggregated != 1 {
		t.Fatalf("verify a DP round: %+v %v, want it re-run", rep, err)
	}
}
