package trainer

import (
	"context"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
)

// auditFixture is a small LoRA task and a trainer's data.
type auditFixture struct {
	dir  string
	ad   *model.Adapter
	lc   model.LoRAConfig
	data Data
}

func newAuditFixture(t *testing.T) *auditFixture {
	t.Helper()
	dir, cfg := tinyModel(t)
	ds, err := datasets.Load("../datasets/testdata/shards/trainer-1.jsonl", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lc := model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj"}}
	ad, err := model.NewAdapter(cfg, lc, 7)
	if err != nil {
		t.Fatal(err)
	}
	return &auditFixture{dir: dir, ad: ad, lc: lc, data: Data{Dataset: ds}}
}

const auditSteps = 4

func (f *auditFixture) task(t *testing.T, steps int, seed uint64, store *commitment.Store) Task {
	lc := f.lc
	return Task{JobID: "job-1", Round: 3, ModelDir: f.dir, Adapter: f.ad, OutDir: t.TempDir(), Compression: "none", Checkpoints: store,
		Train: model.TrainConfig{LoRA: &lc, Steps: steps, Batch: 2, SeqLen: 16, LR: 1e-2, ClipNorm: 1, Schedule: model.ScheduleConstant, Seed: seed}}
}

// train fits a task as a trainer node does, keeping its checkpoints.
func (f *auditFixture) train(t *testing.T, task Task, d Data) Update {
	t.Helper()
	u, err := (&EngineBackend{Device: DeviceHost, Open: engineDevices[DeviceHost]}).Fit(context.Background(), task, d)
	if err != nil {
		t.Fatal(err)
	}
	if u.Commitment == nil || u.Commitment.Steps != uint64(task.Train.Steps) {
		t.Fatalf("update commitment %+v for %d steps", u.Commitment, task.Train.Steps)
	}
	return u
}

func claimOf(u Update) Claim {
	return Claim{Job: "job-1", Round: 3, UpdateDigest: u.Digest, Commitment: *u.Commitment}
}

// forge overwrites the checkpoints of steps from..to with random states,
// discloses the new digests and returns the commitment over them: a
// cheater's consistent lie.
func forge(t *testing.T, s *commitment.Store, c ledger.TrainingCommitment, from, to int, like map[string]*model.Tensor) ledger.TrainingCommitment {
	t.Helper()
	ds, err := s.Digests("job-1", 3)
	if err != nil {
		ds = make([]string, to)
	}
	for len(ds) < to {
		ds = append(ds, "")
	}
	r := rand.New(rand.NewPCG(9, uint64(from)))
	for step := from; step <= to; step++ {
		st := map[string]*model.Tensor{}
		for n, x := range like {
			y := &model.Tensor{Shape: x.Shape, Data: make([]float32, len(x.Data))}
			for i := range y.Data {
				y.Data[i] = float32(r.NormFloat64())
			}
			st[n] = y
		}
		ts, err := commitment.Tensors(st)
		if err != nil {
			t.Fatal(err)
		}
		if ds[step-1], err = s.Save("job-1", 3, step, ts); err != nil {
			t.Fatal(err)
		}
	}
	ds = ds[:to]
	if err := s.SaveDigests("job-1", 3, ds); err != nil {
		t.Fatal(err)
	}
	root, err := commitment.StepRoot(ds)
	if err != nil {
		t.Fatal(err)
	}
	c.Steps, c.StepRoot = uint64(to), root
	return c
}

func replay(t *testing.T, f *auditFixture, claim Claim, store *commitment.Store) Verdict {
	t.Helper()
	v, err := Replay(context.Background(), f.task(t, auditSteps, 3, nil), f.data, claim, store)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestReplayHonest(t *testing.T) {
	f := newAuditFixture(t)
	store := &commitment.Store{Dir: t.TempDir()}
	u := f.train(t, f.task(t, auditSteps, 3, store), f.data)
	v := replay(t, f, claimOf(u), store)
	if !v.Honest() || v.Reason != "" || len(v.Lies) != 0 {
		t.Fatalf("honest trainer failed replay: %+v", v)
	}
	steps, err := store.Steps("job-1", 3)
	if err != nil || len(steps) != auditSteps {
		t.Fatalf("trainer kept checkpoints of steps %v (%v), want %d", steps, err, auditSteps)
	}
}

func TestReplayCatchesCheaters(t *testing.T) {
	f := newAuditFixture(t)
	other, err := datasets.Load("../datasets/testdata/shards/trainer-2.jsonl", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// cheat trains (or not) into store and returns the claim.
		cheat func(t *testing.T, store *commitment.Store) Claim
		// the step named, or the range (after, before] when not pinned.
		step, after, before int
		lies                int
		want                string
	}{
		{"random update, consistent forged commitment", func(t *testing.T, s *commitment.Store) Claim {
			honest := f.train(t, f.task(t, auditSteps, 3, nil), f.data)
			c := forge(t, s, *honest.Commitment, 1, auditSteps, f.ad.Tensors)
			return Claim{Job: "job-1", Round: 3, UpdateDigest: digest.Bytes([]byte("random")), Commitment: c}
		}, 1, 0, 1, 0, "step 1 is the first"},
		{"random update, honest commitment", func(t *testing.T, s *commitment.Store) Claim {
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			c := claimOf(u)
			c.UpdateDigest = digest.Bytes([]byte("random"))
			return c
		}, 0, 0, 0, 0, "the steps match but the update"},
		{"fewer steps", func(t *testing.T, s *commitment.Store) Claim {
			return claimOf(f.train(t, f.task(t, auditSteps/2, 3, s), f.data))
		}, auditSteps/2 + 1, auditSteps / 2, auditSteps/2 + 1, 0, "commits 2 steps, the task asks 4"},
		{"other data", func(t *testing.T, s *commitment.Store) Claim {
			return claimOf(f.train(t, f.task(t, auditSteps, 3, s), Data{Dataset: other}))
		}, 1, 0, 1, 0, "inputs digest"},
		{"another seed", func(t *testing.T, s *commitment.Store) Claim {
			return claimOf(f.train(t, f.task(t, auditSteps, 4, s), f.data))
		}, 1, 0, 1, 0, "inputs digest"},
		{"honest first half, forged second half", func(t *testing.T, s *commitment.Store) Claim {
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			c := claimOf(u)
			c.Commitment = forge(t, s, c.Commitment, auditSteps/2+1, auditSteps, f.ad.Tensors)
			return c
		}, auditSteps/2 + 1, auditSteps / 2, auditSteps/2 + 1, 0, "step 3 is the first"},
		{"forged second half, only even checkpoints: bisection narrows", func(t *testing.T, s *commitment.Store) Claim {
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			c := claimOf(u)
			c.Commitment = forge(t, s, c.Commitment, auditSteps/2+1, auditSteps, f.ad.Tensors)
			for _, step := range []int{1, 3} {
				p, _ := s.Path("job-1", 3, step)
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
			return c
		}, 0, 2, 4, 0, "in 3..4"},
		{"forged second half, lying checkpoint", func(t *testing.T, s *commitment.Store) Claim {
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			c := claimOf(u)
			c.Commitment = forge(t, s, c.Commitment, auditSteps/2+1, auditSteps, f.ad.Tensors)
			// The trainer swaps step 2's checkpoint for another state:
			// it no longer proves against the root.
			p3, _ := s.Path("job-1", 3, 3)
			data, err := os.ReadFile(p3)
			if err != nil {
				t.Fatal(err)
			}
			p2, _ := s.Path("job-1", 3, 2)
			if err := os.WriteFile(p2, data, 0o644); err != nil {
				t.Fatal(err)
			}
			return c
		}, 0, 1, 3, 1, "do not prove against the step root (lies), first step 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &commitment.Store{Dir: t.TempDir()}
			claim := tt.cheat(t, store)
			v := replay(t, f, claim, store)
			t.Log(v.Reason)
			if v.Honest() {
				t.Fatalf("cheater passed replay: %+v", v)
			}
			if v.FirstBadStep != tt.step || (tt.step == 0 && tt.after+tt.before > 0 && (v.After != tt.after || v.Before != tt.before)) {
				t.Errorf("named step %d in (%d, %d], want step %d in (%d, %d]", v.FirstBadStep, v.After, v.Before, tt.step, tt.after, tt.before)
			}
			if len(v.Lies) != tt.lies {
				t.Errorf("%d lies %v, want %d", len(v.Lies), v.Lies, tt.lies)
			}
			if !strings.Contains(v.Reason, tt.want) {
				t.Errorf("reason %q does not say %q", v.Reason, tt.want)
			}
		})
	}
}
