package devnet

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/spotcheck"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/trainer"
	"github.com/fedtune/fedtune/verifier"
)

// forgedBackend trains as its task asks and commits honestly to the run,
// then submits other weights than the run's result (one weight of the
// adapter nudged): an update that passes every check the aggregator can
// make, and whose commitment holds for every step.
type forgedBackend struct{ be trainer.Backend }

// Fit implements trainer.Backend.
func (b forgedBackend) Fit(ctx context.Context, t trainer.Task, d trainer.Data) (trainer.Update, error) {
	u, err := b.be.Fit(ctx, t, d)
	if err != nil {
		return u, err
	}
	ad, err := trainer.ReadAdapter(u.Path, *t.Train.LoRA)
	if err != nil {
		return u, err
	}
	for _, x := range ad.Tensors {
		x.Data[0] += 1e-3
		break
	}
	u.Digest, err = trainer.WriteUpdate(u.Path, ad.Tensors, t.Compression, t.Int8Block)
	return u, err
}

// TestNetworkSpotCheck: a job on published data with verify on (fraction
// 1): trainer-1 has data of its own but, the job being spot-checked,
// trains on its published range alone, as trainers 2 and 3 (who have no
// data) do; trainer-3 trains honestly but submits other weights than its
// run's result. The coordinator
// closes the round's submissions; the verifier replays every drawn update
// from the ledger and the artifact store, passes trainer-1's and
// trainer-2's and rejects trainer-3's naming the step, before the round
// commits on trainers 1 and 2. trainer-3 sits out round 2 (the job's
// suspension policy), which commits on trainers 1 and 2 again.
func TestNetworkSpotCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n := prepare(t, ctx, Options{JobName: "spot", Trainers: 3, Rounds: 2, LocalSteps: 3, MinTrainers: 2, PretrainSteps: 2,
		TrainerBackend: func(i int) trainer.Backend {
			if i != 3 {
				return nil
			}
			be, err := trainer.NewBackend("")
			if err != nil {
				t.Fatal(err)
			}
			return forgedBackend{be}
		}})
	for _, name := range []string{"trainer-2", "trainer-3"} {
		p := n.path(name, "trainer.yaml")
		var cfg map[string]any
		readYAML(t, p, &cfg)
		delete(cfg, "data")
		if err := writeYAML(p, cfg); err != nil {
			t.Fatal(err)
		}
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	// trainer-1 publishes the shard the devnet would have given trainer-2.
	k1 := n.Keys["trainer-1"]
	d, ok := trainer.ReadInstruct(n.Shards[1])
	format := dspub.FormatInstruct
	if !ok {
		format = dspub.FormatText
		if d, err = datasets.Load(n.Shards[1], datasets.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	sm, err := trainer.PublishDataset(ctx, publishedArtifacts(t, n, k1), k1, d, nil,
		datasets.PublishOptions{Name: "arith", Format: format, Licence: "CC-BY-4.0", ShardSamples: 64})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewSigner(lc, k1).Submit(ctx, ledger.DatasetPublished{Manifest: string(sm.Envelope)}); err != nil {
		t.Fatal(err)
	}

	// The admin admits a verifier; it follows the ledger from the start.
	vk, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	vid := ledger.KeyID(vk.Public().(ed25519.PublicKey))
	if _, err := client.NewSigner(lc, n.Keys["admin"]).Submit(ctx, ledger.MemberAdded{
		PublicKey: hex.EncodeToString(vk.Public().(ed25519.PublicKey)), Role: ledger.RoleVerifier, Name: "verifier-1"}); err != nil {
		t.Fatal(err)
	}
	vlc, err := n.Ledger(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer vlc.Close()
	st, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// No model folder: the verifier fetches the base model by the ledger's
	// digests into its cache.
	vwork := t.TempDir()
	vn, err := verifier.New(verifier.Config{Ledger: vlc, Key: vk, Logger: testLogger(t).With("part", "verifier"), Retry: 200 * time.Millisecond,
		Replayer: &spotcheck.Replayer{Ledger: vlc, Artifacts: publishedArtifacts(t, n, vk), Store: st, WorkDir: vwork, Logger: testLogger(t)}})
	if err != nil {
		t.Fatal(err)
	}
	vctx, vcancel := context.WithCancel(ctx)
	verr := make(chan error, 1)
	go func() { verr <- vn.Run(vctx) }()
	defer func() {
		vcancel()
		if err := <-verr; err != nil {
			t.Errorf("verifier: %v", err)
		}
	}()

	var job map[string]any
	readYAML(t, n.JobFile, &job)
	job["datasets"] = map[string]any{"published": []string{sm.Digest}, "range_samples": 8}
	job["verify"] = map[string]any{"fraction": 1, "by": []string{vid}, "suspend_rounds": 1}
	if err := writeYAML(n.JobFile, job); err != nil {
		t.Fatal(err)
	}
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
	r, err := lc.Round(ctx, "spot", 1)
	if err != nil {
		t.Fatal(err)
	}
	t1, t2, t3 := n.ID("trainer-1"), n.ID("trainer-2"), n.ID("trainer-3")
	jr, err := lc.Job(ctx, "spot")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := model.DigestPath(filepath.Join(vwork, "models", "model-"+jr.Recipe.BaseModel)); err != nil || got != jr.Recipe.BaseModel {
		t.Errorf("the verifier's cached base model: digest %s (%v), want the recipe's %s", got, err, jr.Recipe.BaseModel)
	}
	// The verifier's metrics: four honest replays (trainers 1 and 2, two
	// rounds), trainer-3's mismatch, each timed; the followed height.
	fams, err := vn.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	val := func(name, label string) float64 {
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
					continue
				}
				switch {
				case m.GetCounter() != nil:
					return m.GetCounter().GetValue()
				case m.GetGauge() != nil:
					return m.GetGauge().GetValue()
				case m.GetHistogram() != nil:
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		return -1
	}
	for _, m := range []struct {
		name, label string
		min         float64
	}{
		{"fedtune_verifier_replays_total", "match", 4}, {"fedtune_verifier_replays_total", "mismatch", 1},
		{"fedtune_verifier_mismatches_total", "", 1}, {"fedtune_verifier_replay_seconds", "", 5},
		{"fedtune_verifier_verdicts_total", "pass", 4}, {"fedtune_verifier_verdicts_total", "reject", 1},
		{"fedtune_verifier_height", "", float64(r.SubmissionsClosedHeight)},
	} {
		if v := val(m.name, m.label); v < m.min {
			t.Errorf("metric %s{%s} = %v, want at least %v", m.name, m.label, v, m.min)
		}
	}
	if r.SubmissionsClosedHeight == 0 || r.DrawSeed == "" {
		t.Fatalf("round 1 shows no closed submissions: %+v", r)
	}
	for _, u := range r.Updates {
		switch u.Trainer {
		case t1, t2:
			// The round's read leaves the disclosed step digests out;
			// the per-update read returns them.
			if c := u.Commitment; c == nil || len(c.StepDigests) != 0 {
				t.Errorf("round 1's update of honest trainer %s: commitment %+v; want one without step digests", u.Trainer[:8], c)
			} else if ds, err := lc.StepDigests(ctx, "spot", 1, &u); err != nil || uint64(len(ds)) != c.Steps {
				t.Errorf("honest trainer %s does not disclose its step digests: %d of %d (%v)", u.Trainer[:8], len(ds), c.Steps, err)
			} else if root, err := ledger.StepDigestsRoot(ds); err != nil || root != c.StepRoot {
				t.Errorf("honest trainer %s: disclosed step digests hash to %s (%v), not the step root %s", u.Trainer[:8], root, err, c.StepRoot)
			}
			if !u.Drawn || u.VerifiedBy != vid || u.Rejected || u.DatasetDigest != sm.Digest {
				t.Errorf("honest trainer %s: drawn %v verified by %q rejected %v (%s) on dataset %s", u.Trainer[:8], u.Drawn, u.VerifiedBy, u.Rejected, u.RejectReason, u.DatasetDigest)
			}
		case t3:
			if !u.Drawn || !u.Rejected || u.RejectedBy != vid || u.RejectStep == 0 || !strings.Contains(u.RejectReason, "spot check") {
				t.Errorf("trainer-3 (forged): %+v; want rejected by the verifier naming a step", u)
			}
			if c := u.Commitment; c == nil || u.RejectStep != c.Steps {
				t.Errorf("trainer-3's update is not the result of its last step; the verifier names step %d", u.RejectStep)
			}
			t.Logf("trainer-3 rejected at step %d: %s", u.RejectStep, u.RejectReason)
		}
	}
	if len(r.Contributors) != 2 || !contributes(r, t1) || !contributes(r, t2) {
		t.Fatalf("contributors %+v; want trainers 1 and 2", r.Contributors)
	}
	// trainer-3 sits out round 2 (suspend_rounds 1); trainer-2 is checked
	// again and passes.
	r2, err := lc.Round(ctx, "spot", 2)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(r2.Trainers, t3) || len(r2.Contributors) != 2 {
		t.Fatalf("round 2 selects %v with contributors %+v; want trainers 1 and 2 only", r2.Trainers, r2.Contributors)
	}
	for _, u := range r2.Updates {
		if !u.Drawn || u.VerifiedBy != vid {
			t.Errorf("round 2, trainer %s: %+v", u.Trainer[:8], u)
		}
	}
	// The rejection is on the chain before the commit.
	var rejectedAt, committedAt int
	for i, tx := range txsOf(t, ctx, lc) {
		switch b := tx.Body.(type) {
		case ledger.UpdateRejected:
			if b.JobID == "spot" && tx.Signer == vid {
				rejectedAt = i
			}
		case ledger.RoundCommitted:
			if b.JobID == "spot" && b.Round == 1 {
				committedAt = i
			}
		}
	}
	if rejectedAt == 0 || committedAt < rejectedAt {
		t.Fatalf("the verifier's rejection is tx %d, the commit tx %d; want the rejection first", rejectedAt, committedAt)
	}
	// The chain, its spot checks included, verifies offline, and every
	// round re-runs from the export and the artifacts.
	exportPath := filepath.Join(t.TempDir(), "chain.fedtune")
	auditExportChain(t, ctx, lc, n.path("genesis.yaml"), exportPath)
	f, err := os.Open(exportPath)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.ReadExport(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(ctx, e, audit.VerifyOptions{Artifacts: n.path("coordinator", "artifacts")})
	if err != nil || rep.Reaggregated != 2 {
		t.Fatalf("audit verify of the spot-checked chain: %+v, %v; want both rounds re-run", rep, err)
	}
}
