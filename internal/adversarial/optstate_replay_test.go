package adversarial

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

// A pretrain trainer lies to an auditor about the inner optimizer state
// its round 2 started from: it hands over another state (its moments
// nudged, as if it had trained from other moments and kept the copy to
// match) under JOB/ROUND/start-optstate.safetensors. Replay names the
// copy a lie; the honest copy replays bit for bit.
func TestAttackForgedStartOptState(t *testing.T) {
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
	base, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := datasets.Load("../../datasets/testdata/english/train.txt", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := trainer.Data{Dataset: ds}
	state, err := trainer.OptStatePath(t.TempDir(), "pre-x")
	if err != nil {
		t.Fatal(err)
	}
	store := &commitment.Store{Dir: t.TempDir(), Keep: 4}
	task := func(round uint64) trainer.Task {
		return trainer.Task{JobID: "pre-x", Round: round, ModelDir: dir, OutDir: t.TempDir(), Compression: "none", Base: base, OptState: state,
			Checkpoints: store, Train: model.TrainConfig{Steps: 2, Batch: 2, SeqLen: 16, LR: 3e-3, Schedule: model.ScheduleConstant, Seed: 9}}
	}
	be, err := trainer.NewBackend(trainer.DeviceHost)
	if err != nil {
		t.Fatal(err)
	}
	var claim trainer.Claim
	for round := uint64(1); round <= 2; round++ {
		u, err := be.Fit(context.Background(), task(round), data)
		if err != nil {
			t.Fatal(err)
		}
		claim = trainer.Claim{Job: "pre-x", Round: round, UpdateDigest: u.Digest, Commitment: *u.Commitment}
	}
	rt := task(2)
	rt.Checkpoints, rt.OptState = nil, ""
	if v, err := trainer.Replay(context.Background(), rt, data, claim, store); err != nil || !v.Honest() {
		t.Fatalf("honest copy: %v, %s", err, v.Reason)
	}
	p, err := store.StartOptStatePath("pre-x", 2)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := trainer.LoadOptState(p, "pre-x")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.V {
		v.Data[0] += 1e-6
	}
	if err := trainer.SaveOptState(p, "pre-x", 1, st); err != nil {
		t.Fatal(err)
	}
	v, err := trainer.Replay(context.Background(), rt, data, claim, store)
	if err != nil {
		t.Fatal(err)
	}
	if v.Honest() || v.OptStateLie == nil || !strings.Contains(v.Reason, "start-optstate.safetensors") || !strings.Contains(v.Reason, "a lie") {
		t.Fatalf("forged copy: honest %v, lie %v, reason %q", v.Honest(), v.OptStateLie, v.Reason)
	}
}
