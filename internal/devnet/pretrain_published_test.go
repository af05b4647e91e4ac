package devnet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

// TestNoRaceNetworkPretrainPublished: federated pre-training, DiLoCo
// style, over a published dataset by trainers with no data of their own.
// trainer-1 publishes the shipped English text; the pretrain job names it,
// so each round gives each trainer a disjoint range of it (recorded in
// RoundOpened); both train H inner steps on their ranges, keeping their
// AdamW state between rounds, and their updates name the dataset and the
// ranges. Two rounds commit.
func TestNoRaceNetworkPretrainPublished(t *testing.T) {
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
	models, err := filepath.Abs("../../configs/models")
	if err != nil {
		t.Fatal(err)
	}
	job := strings.Replace(string(src), "  seq_len: 64\n", "  seq_len: 32\n", 1)
	job = strings.Replace(job, "init: ../models/", "init: "+models+"/", 1)
	jobPath := filepath.Join(t.TempDir(), "pretrain.yaml")
	if err := os.WriteFile(jobPath, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	n := prepare(t, ctx, Options{Job: jobPath, JobName: "pretrain-pub", Trainers: 2, MinTrainers: 2, Rounds: 2, LocalSteps: 10,
		TrainData: "datasets/testdata/english/train.txt"})
	for _, tr := range []string{"trainer-1", "trainer-2"} {
		p := n.path(tr, "trainer.yaml")
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

	k1 := n.Keys["trainer-1"]
	d, err := datasets.Load(filepath.Join("..", "..", "datasets", "testdata", "english", "train.txt"), datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := trainer.PublishDataset(ctx, publishedArtifacts(t, n, k1), k1, d, nil,
		datasets.PublishOptions{Name: "english", Format: dspub.FormatText, Licence: "CC0-1.0", ShardSamples: 32})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewSigner(lc, k1).Submit(ctx, ledger.DatasetPublished{Manifest: string(sm.Envelope)}); err != nil {
		t.Fatal(err)
	}
	var jm map[string]any
	readYAML(t, n.JobFile, &jm)
	jm["datasets"] = map[string]any{"published": []string{sm.Digest}, "range_samples": 30}
	if err := writeYAML(n.JobFile, jm); err != nil {
		t.Fatal(err)
	}
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
	for r := uint64(1); r <= 2; r++ {
		rd, err := lc.Round(ctx, "pretrain-pub", r)
		if err != nil {
			t.Fatal(err)
		}
		if rd.Status != ledger.StatusCommitted || len(rd.Ranges) != 2 || len(rd.Contributors) != 2 {
			t.Fatalf("round %d: %s with %d ranges and %d contributors; want committed, 2 and 2", r, rd.Status, len(rd.Ranges), len(rd.Contributors))
		}
		for _, u := range rd.Updates {
			want := ledger.RangesOf(rd.Ranges, u.Trainer)
			if u.Rejected || u.DatasetDigest != sm.Digest || len(u.Ranges) != 1 || len(want) != 1 || u.Ranges[0] != want[0] {
				t.Fatalf("round %d: update %+v; want one on %s over %+v", r, u, sm.Digest, want)
			}
		}
		t.Logf("round %d: ranges %+v", r, rd.Ranges)
	}
	optFiles, err := filepath.Glob(filepath.Join(n.Dir, "*", "work", "optstate", "pretrain-pub.safetensors"))
	if err != nil || len(optFiles) != 2 {
		t.Fatalf("inner optimizer state files %v (%v), want one per trainer", optFiles, err)
	}
	for _, p := range optFiles {
		if st, round, err := trainer.LoadOptState(p, "pretrain-pub"); err != nil || round != 2 || st.Steps != 20 {
			t.Fatalf("%s: %v, round %d; want the state after round 2 (20 AdamW steps)", p, err, round)
		}
	}
}
