package trainer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
)

// TestReplayPretrainKeptOptState: a pretrain trainer on the Host keeps
// its inner AdamW state between rounds and the state each round started
// from beside the round's checkpoints (pruned with them). Round 2, which
// started from round 1's kept state, replays bit for bit from that copy;
// without it the replay says the starting optimizer state is needed
// rather than accusing a step; a forged or corrupt copy is named a lie.
func TestReplayPretrainKeptOptState(t *testing.T) {
	dir, _ := tinyModel(t)
	base, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	baseDigest, err := base.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := datasets.Load("../datasets/testdata/english/train.txt", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := Data{Dataset: ds}
	state, err := OptStatePath(t.TempDir(), "pre-1")
	if err != nil {
		t.Fatal(err)
	}
	store := &commitment.Store{Dir: t.TempDir(), Keep: 2}
	task := func(round uint64) Task {
		return Task{JobID: "pre-1", Round: round, ModelDir: dir, OutDir: t.TempDir(), Compression: "none", Base: baseDigest, OptState: state,
			Checkpoints: store, Train: model.TrainConfig{Steps: 3, Batch: 2, SeqLen: 16, LR: 3e-3, Schedule: model.ScheduleConstant, Seed: 5}}
	}
	be := &EngineBackend{Device: DeviceHost, Open: engineDevices[DeviceHost]}
	claims := map[uint64]Claim{}
	for round := uint64(1); round <= 3; round++ {
		u, err := be.Fit(context.Background(), task(round), data)
		if err != nil {
			t.Fatal(err)
		}
		claims[round] = Claim{Job: "pre-1", Round: round, UpdateDigest: u.Digest, Commitment: *u.Commitment}
	}
	start := func(round uint64) string {
		p, err := store.StartOptStatePath("pre-1", round)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := os.Stat(filepath.Dir(start(1))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("round 1's folder outlived the audit window of 2 rounds: %v", err)
	}
	for _, r := range []uint64{2, 3} {
		st, _, err := LoadOptState(start(r), "pre-1")
		if err != nil || st.Steps != 3*int(r-1) {
			t.Fatalf("round %d's starting state: %v (%v), want %d steps", r, err, st, 3*(r-1))
		}
	}
	replay := func(round uint64, ckpt *commitment.Store) Verdict {
		t.Helper()
		v, err := Replay(context.Background(), task(round), data, claims[round], ckpt)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	if v := replay(2, store); !v.Honest() || v.OptStateLie != nil || v.NeedsOptState {
		t.Fatalf("honest round 2 from its kept state: %+v", v)
	}
	v := replay(2, nil)
	if v.Honest() || !v.NeedsOptState || v.FirstBadStep != 0 || !strings.Contains(v.Reason, "needs that starting optimizer state") {
		t.Fatalf("round 2 without its starting state: needs %v, first bad step %d, reason %q", v.NeedsOptState, v.FirstBadStep, v.Reason)
	}

	// A forged copy: other moments under the same file name.
	st, _, err := LoadOptState(start(2), "pre-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.M {
		m.Data[0] += 1e-3
		break
	}
	forged := &commitment.Store{Dir: t.TempDir()}
	p, err := forged.StartOptStatePath("pre-1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveOptState(p, "pre-1", 1, st); err != nil {
		t.Fatal(err)
	}
	v = replay(2, forged)
	if v.Honest() || v.OptStateLie == nil || !strings.Contains(v.Reason, p) || !strings.Contains(v.Reason, "a lie") || v.InputsMatch {
		t.Fatalf("forged starting state: lie %v, reason %q", v.OptStateLie, v.Reason)
	}
	// A step count that is not the kept one is a forgery too.
	st.Steps = 99
	if err := SaveOptState(p, "pre-1", 1, st); err != nil {
		t.Fatal(err)
	}
	if v = replay(2, forged); v.OptStateLie == nil {
		t.Fatalf("forged step count: %+v", v)
	}
	// A copy that is not an optimizer state at all.
	if err := os.WriteFile(p, []byte("not safetensors"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v = replay(2, forged); v.Honest() || v.OptStateLie == nil || !strings.Contains(v.Reason, "cannot be used") {
		t.Fatalf("corrupt starting state: lie %v, reason %q", v.OptStateLie, v.Reason)
	}
}
