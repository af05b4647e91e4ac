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
	"github.com/fedtune/fedtune/ledger"
)

// TestNetworkInt8Deltas runs one int8 round of a full fine-tuning job and
// one of a LoRA job on a whole devnet: each trainer sends the int8 delta
// from the round's base (fedtune.kind=delta), the coordinator's aggregator
// adds the combined deltas to the base and commits, and an offline audit
// re-runs the round from the export and the artifacts to the committed
// digest.
func TestNetworkInt8Deltas(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	for _, tc := range []struct{ name, job, from string }{
		{"full", "full-finetune.yaml", "  kind: bf16\n"},
		{"lora", "demo-lora.yaml", "  kind: none\n  block: 0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) { int8DeltaNetwork(t, tc.job, tc.from) })
	}
}

func int8DeltaNetwork(t *testing.T, jobFile, compression string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	src, err := os.ReadFile(filepath.Join("../../configs/jobs", jobFile))
	if err != nil {
		t.Fatal(err)
	}
	job := strings.Replace(string(src), compression, "  kind: int8\n  block: 64\n", 1)
	if job == string(src) {
		t.Fatalf("configs/jobs/%s has no %q compression to replace", jobFile, compression)
	}
	job = strings.Replace(job, "  seq_len: 64 ", "  seq_len: 32 ", 1)
	// The copy lives elsewhere: paths relative to configs/jobs become absolute.
	jobsDir, err := filepath.Abs("../../configs/jobs")
	if err != nil {
		t.Fatal(err)
	}
	job = strings.ReplaceAll(job, " ../../", " "+filepath.Join(jobsDir, "../..")+"/")
	jobPath := filepath.Join(t.TempDir(), "int8-"+jobFile)
	if err := os.WriteFile(jobPath, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	n := prepare(t, ctx, Options{Job: jobPath, JobName: "int8-" + strings.TrimSuffix(jobFile, ".yaml"), Trainers: 2, MinTrainers: 2, Rounds: 1, LocalSteps: 3, PretrainSteps: 2})
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
	if st.State != coordinator.JobDone || len(st.Rounds) != 1 || st.Model == "" {
		t.Fatalf("job ended %s (%s) with %d rounds, model %q; want done with 1", st.State, st.Detail, len(st.Rounds), st.Model)
	}
	exportPath := filepath.Join(t.TempDir(), "chain.fedtune")
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	txs := auditExportChain(t, ctx, lc, n.path("genesis.yaml"), exportPath)
	lc.Close()
	store := n.path("coordinator", "artifacts")
	nw.Stop()

	updates := 0
	for _, tx := range txs {
		u, ok := tx.tx.Body.(ledger.UpdateSubmitted)
		if !ok {
			continue
		}
		updates++
		p, ok := audit.ArtifactPath(store, u.UpdateDigest)
		if !ok {
			t.Fatalf("update %s is not in the coordinator's store", u.UpdateDigest)
		}
		up, err := aggregator.OpenUpdate(p)
		if err != nil {
			t.Fatal(err)
		}
		if up.Kind() != aggregator.KindDelta || up.Block() != 64 {
			t.Errorf("update %s: kind %q, int8 block %d; want an int8 delta with block 64", u.UpdateDigest, up.Kind(), up.Block())
		}
		up.Close()
	}
	if updates != 2 {
		t.Fatalf("%d updates on the chain, want 2", updates)
	}
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
	if rep.Rounds != 1 || rep.Reaggregated != 1 {
		t.Errorf("verify: %d committed rounds, %d re-aggregated; want 1 and 1", rep.Rounds, rep.Reaggregated)
	}
}
