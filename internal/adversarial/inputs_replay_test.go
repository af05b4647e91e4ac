package adversarial

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

// A trainer trains on other data than its registered set and, to steer
// an auditor, discloses the task's true inputs (an honest run's
// inputs.json) beside its checkpoints. The disclosure does not prove
// against its committed inputs digest: replay names it a lie, does not
// use it (no batch is blamed on it), and still names the first step and
// its first differing operation from the proved checkpoints.
func TestAttackForgedDisclosedInputs(t *testing.T) {
	cfg, err := model.LoadConfigYAML("../../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "tiny")
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	load := func(p string) trainer.Data {
		ds, err := datasets.Load(p, datasets.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return trainer.Data{Dataset: ds}
	}
	own, other := load("../../datasets/testdata/shards/trainer-1.jsonl"), load("../../datasets/testdata/shards/trainer-2.jsonl")
	task := func(s *commitment.Store) trainer.Task {
		return trainer.Task{JobID: "job-x", Round: 1, ModelDir: dir, OutDir: t.TempDir(), Compression: "none", Checkpoints: s,
			Train: model.TrainConfig{Steps: 2, Batch: 2, SeqLen: 16, LR: 3e-3, Schedule: model.ScheduleConstant, Seed: 9}}
	}
	be, err := trainer.NewBackend(trainer.DeviceHost)
	if err != nil {
		t.Fatal(err)
	}
	honest := &commitment.Store{Dir: t.TempDir()}
	if _, err := be.Fit(context.Background(), task(honest), own); err != nil {
		t.Fatal(err)
	}
	cheat := &commitment.Store{Dir: t.TempDir()}
	u, err := be.Fit(context.Background(), task(cheat), other)
	if err != nil {
		t.Fatal(err)
	}
	claim := trainer.Claim{Job: "job-x", Round: 1, UpdateDigest: u.Digest, Commitment: *u.Commitment}
	// Unforged, the disclosure names the batch.
	v, err := trainer.Replay(context.Background(), task(nil), own, claim, cheat)
	if err != nil {
		t.Fatal(err)
	}
	if v.Honest() || v.Op == nil || v.Op.Phase != trainer.OpBatch || v.InputsLie != nil {
		t.Fatalf("cheater with its own disclosure: %+v", v)
	}
	hp, _ := honest.Path("job-x", 1, 1)
	cp, _ := cheat.Path("job-x", 1, 1)
	js, err := os.ReadFile(filepath.Join(filepath.Dir(hp), commitment.InputsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(cp), commitment.InputsFile), js, 0o644); err != nil {
		t.Fatal(err)
	}
	v, err = trainer.Replay(context.Background(), task(nil), own, claim, cheat)
	if err != nil {
		t.Fatal(err)
	}
	if v.Honest() || v.InputsLie == nil || !strings.Contains(v.Reason, "not the committed inputs digest") || !strings.Contains(v.Reason, "(a lie)") {
		t.Fatalf("forged disclosure not named a lie: %s", v.Reason)
	}
	if v.FirstBadStep != 1 || v.Op == nil || v.Op.Phase != trainer.OpUpdate || v.Op.BatchChecked || v.InputsDiff != nil {
		t.Fatalf("forged disclosure used: step %d, op %+v, diff %v", v.FirstBadStep, v.Op, v.InputsDiff)
	}
	t.Log(v.Reason)
}
