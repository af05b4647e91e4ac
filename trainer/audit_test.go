package trainer

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/safetensors"
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

// forgeTensor changes one tensor of step's checkpoint, forges the later
// steps and returns the commitment over them: a trainer honest but for
// one tensor of one step.
func forgeTensor(t *testing.T, s *commitment.Store, c ledger.TrainingCommitment, step int, name string) ledger.TrainingCommitment {
	t.Helper()
	p, err := s.Path("job-1", 3, step)
	if err != nil {
		t.Fatal(err)
	}
	m := readState(t, p)
	x, ok := m[name]
	if !ok {
		t.Fatalf("checkpoint of step %d has no %s", step, name)
	}
	x.Data[0] += 1e-3
	ts, err := commitment.Tensors(m)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := s.Digests("job-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if ds[step-1], err = s.Save("job-1", 3, step, ts); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveDigests("job-1", 3, ds); err != nil {
		t.Fatal(err)
	}
	if step < int(c.Steps) {
		return forge(t, s, c, step+1, int(c.Steps), m)
	}
	if c.StepRoot, err = commitment.StepRoot(ds); err != nil {
		t.Fatal(err)
	}
	return c
}

// readState reads a checkpoint's tensors.
func readState(t *testing.T, p string) map[string]*model.Tensor {
	t.Helper()
	f, err := safetensors.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]*model.Tensor{}
	for _, ti := range f.Tensors() {
		x, err := f.Float32s(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		m[ti.Name] = &model.Tensor{Shape: ti.Shape, Data: x}
	}
	return m
}

// removeInputs removes the trainer's disclosed inputs.
func removeInputs(t *testing.T, s *commitment.Store) {
	t.Helper()
	p, err := s.Path("job-1", 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(filepath.Dir(p), commitment.InputsFile)); err != nil {
		t.Fatal(err)
	}
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
		// op is what the named operation must say ("" when no step is
		// pinned), phase its phase.
		op, phase string
	}{
		{"random update, consistent forged commitment", func(t *testing.T, s *commitment.Store) Claim {
			honest := f.train(t, f.task(t, auditSteps, 3, nil), f.data)
			c := forge(t, s, *honest.Commitment, 1, auditSteps, f.ad.Tensors)
			return Claim{Job: "job-1", Round: 3, UpdateDigest: digest.Bytes([]byte("random")), Commitment: c}
		}, 1, 0, 1, 0, "step 1 is the first", "layer 0 q_proj lora_A (AdamW update), every one of the 8 trainable tensors differs; the forward pass or the loss may differ", OpUpdate},
		{"random update, honest commitment", func(t *testing.T, s *commitment.Store) Claim {
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			c := claimOf(u)
			c.UpdateDigest = digest.Bytes([]byte("random"))
			return c
		}, 0, 0, 0, 0, "the steps match but the update", "", ""},
		{"fewer steps", func(t *testing.T, s *commitment.Store) Claim {
			return claimOf(f.train(t, f.task(t, auditSteps/2, 3, s), f.data))
		}, auditSteps/2 + 1, auditSteps / 2, auditSteps/2 + 1, 0, "commits 2 steps, the task asks 4", "took no step 3 (the task asks 4)", OpSteps},
		{"other data", func(t *testing.T, s *commitment.Store) Claim {
			return claimOf(f.train(t, f.task(t, auditSteps, 3, s), Data{Dataset: other}))
		}, 1, 0, 1, 0, "disclosed inputs differ in step 1's batch samples", "step 1: first difference in the batch", OpBatch},
		{"another seed", func(t *testing.T, s *commitment.Store) Claim {
			return claimOf(f.train(t, f.task(t, auditSteps, 4, s), f.data))
		}, 1, 0, 1, 0, "disclosed inputs differ in seed 4, the task's 3", "step 1: first difference in the batch", OpBatch},
		{"another seed, inputs not disclosed", func(t *testing.T, s *commitment.Store) Claim {
			c := claimOf(f.train(t, f.task(t, auditSteps, 4, s), f.data))
			removeInputs(t, s)
			return c
		}, 1, 0, 1, 0, "(other base, adapter, hyperparameters, seed, batches", "layer 0 q_proj lora_B (AdamW update), 4 of 8 trainable tensors differ, every one with a non-zero gradient; the forward pass or the loss may differ (no proved disclosure of the trainer's inputs", OpUpdate},
		{"another seed, forged disclosed inputs", func(t *testing.T, s *commitment.Store) Claim {
			c := claimOf(f.train(t, f.task(t, auditSteps, 4, s), f.data))
			// The cheater discloses the task's inputs, not its own.
			honest := f.train(t, f.task(t, auditSteps, 3, nil), f.data)
			if err := s.SaveInputs("job-1", 3, honest.inputs); err != nil {
				t.Fatal(err)
			}
			return c
		}, 1, 0, 1, 0, "not the committed inputs digest", "the forward pass or the loss may differ", OpUpdate},
		{"honest but for one tensor at step 3", func(t *testing.T, s *commitment.Store) Claim {
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			c := claimOf(u)
			c.Commitment = forgeTensor(t, s, c.Commitment, 3, "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
			return c
		}, 3, 2, 3, 0, "step 3 is the first", "step 3: first difference in layer 1 v_proj lora_B (AdamW update), 1 of 8 trainable tensors differ; forward and loss agree", OpUpdate},
		{"honest first half, forged second half", func(t *testing.T, s *commitment.Store) Claim {
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			c := claimOf(u)
			c.Commitment = forge(t, s, c.Commitment, auditSteps/2+1, auditSteps, f.ad.Tensors)
			return c
		}, auditSteps/2 + 1, auditSteps / 2, auditSteps/2 + 1, 0, "step 3 is the first", "step 3: first difference in layer 0 q_proj lora_A (AdamW update), every one of the 8 trainable tensors differs; the state before the step and its batch are the committed ones", OpUpdate},
		{"forged second half, only even checkpoints: the disclosed digests pin it", func(t *testing.T, s *commitment.Store) Claim {
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
		}, 3, 2, 3, 0, "step 3 is the first", "step 3: no proved checkpoint of the state after the step", OpUnknown},
		{"forged second half, step digests withheld: not pinned", func(t *testing.T, s *commitment.Store) Claim {
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			c := claimOf(u)
			c.Commitment = forge(t, s, c.Commitment, auditSteps/2+1, auditSteps, f.ad.Tensors)
			p, _ := s.Path("job-1", 3, 1)
			if err := os.Remove(filepath.Join(filepath.Dir(p), commitment.DigestsFile)); err != nil {
				t.Fatal(err)
			}
			return c
		}, 0, 0, 4, 4, "in 1..4 (no proved checkpoint pins it)", "", ""},
		{"forged second half, checkpoint every 3", func(t *testing.T, s *commitment.Store) Claim {
			s.Every = 3
			u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
			if steps, err := s.Steps("job-1", 3); err != nil || len(steps) != 2 || steps[0] != 3 || steps[1] != 4 {
				t.Fatalf("every 3rd step and the last kept: %v (%v)", steps, err)
			}
			c := claimOf(u)
			c.Commitment = forge(t, s, c.Commitment, auditSteps/2+1, auditSteps, f.ad.Tensors)
			return c
		}, 3, 2, 3, 0, "step 3 is the first", "step 3: first difference in layer 0 q_proj lora_A (AdamW update)", OpUpdate},
		{"another seed, checkpoint every 3", func(t *testing.T, s *commitment.Store) Claim {
			s.Every = 3
			return claimOf(f.train(t, f.task(t, auditSteps, 4, s), f.data))
		}, 1, 0, 1, 0, "disclosed inputs differ in seed 4, the task's 3", "step 1: first difference in the batch", OpBatch},
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
		}, 3, 2, 3, 1, "do not prove against the step root (lies), first step 2", "step 3: first difference in layer 0 q_proj lora_A (AdamW update)", OpUpdate},
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
			switch {
			case tt.op == "" && v.Op != nil:
				t.Errorf("an operation named with no step pinned: %+v", v.Op)
			case tt.op == "":
			case v.Op == nil:
				t.Errorf("no operation named, want %q", tt.op)
			default:
				if !strings.Contains(v.Op.Text, tt.op) || v.Op.Phase != tt.phase || !strings.Contains(v.Reason, v.Op.Text) {
					t.Errorf("operation %s %q, want %s %q", v.Op.Phase, v.Op.Text, tt.phase, tt.op)
				}
				if v.Op.Phase == OpUpdate && len(v.Op.Trace) == 0 {
					t.Errorf("no operation trace of step %d", v.Op.Step)
				}
			}
		})
	}
}

// TestReplayModes: full fine-tuning, pre-training and LoRA on packed
// instruction data all commit, pass replay honestly, and a forged last
// step is named.
func TestReplayModes(t *testing.T) {
	dir, cfg := tinyModel(t)
	if err := os.WriteFile(dir+"/tokenizer_config.json", []byte(llama2Config), 0o644); err != nil {
		t.Fatal(err)
	}
	base, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	baseDigest, err := base.Digest()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := datasets.Load("../datasets/testdata/shards/trainer-1.jsonl", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inst, ok := ReadInstruct(instructTrain)
	if !ok {
		t.Fatal("instruction set refused")
	}
	lc := model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj"}}
	ad, err := model.NewAdapter(cfg, lc, 7)
	if err != nil {
		t.Fatal(err)
	}
	tc := model.TrainConfig{Steps: 3, Batch: 2, SeqLen: 16, LR: 1e-3, Schedule: model.ScheduleConstant, Seed: 2}
	tests := []struct {
		name string
		task func(store *commitment.Store) Task
		data Data
		like map[string]*model.Tensor
	}{
		{"full", func(s *commitment.Store) Task {
			return Task{JobID: "job-1", Round: 3, ModelDir: dir, OutDir: t.TempDir(), Compression: "none", Checkpoints: s, Train: tc}
		}, Data{Dataset: plain}, base.Tensors},
		{"pretrain", func(s *commitment.Store) Task {
			return Task{JobID: "job-1", Round: 3, ModelDir: dir, OutDir: t.TempDir(), Compression: "none", Checkpoints: s, Train: tc, Base: baseDigest}
		}, Data{Dataset: plain}, base.Tensors},
		{"lora instruct", func(s *commitment.Store) Task {
			c := tc
			l := lc
			c.LoRA, c.SeqLen, c.LR = &l, 64, 1e-2
			return Task{JobID: "job-1", Round: 3, ModelDir: dir, Adapter: ad, OutDir: t.TempDir(), Compression: "none", Checkpoints: s, Train: c}
		}, Data{Dataset: inst, Instruct: true}, ad.Tensors},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every batch names manifest leaves of the data it came from.
			_, fd, err := loadTask(tt.task(nil), tt.data)
			if err != nil {
				t.Fatal(err)
			}
			leaves := map[string]bool{}
			for _, id := range datasets.SampleIDs(tt.data.Dataset) {
				leaves[id] = true
			}
			src, bsrc := fd.source(tt.task(nil).Train)
			for range 3 {
				if bsrc != nil {
					bsrc.NextBatch()
				} else {
					src.Next()
				}
			}
			for i, ids := range fd.steps() {
				if len(ids) == 0 {
					t.Fatalf("batch %d names no sample", i+1)
				}
				for _, id := range ids {
					if !leaves[id] {
						t.Fatalf("batch %d names %q, not a leaf of the data's manifest", i+1, id)
					}
				}
			}

			store := &commitment.Store{Dir: t.TempDir()}
			u, err := (&EngineBackend{Device: DeviceHost, Open: engineDevices[DeviceHost]}).Fit(context.Background(), tt.task(store), tt.data)
			if err != nil {
				t.Fatal(err)
			}
			claim := Claim{Job: "job-1", Round: 3, UpdateDigest: u.Digest, Commitment: *u.Commitment}
			v, err := Replay(context.Background(), tt.task(nil), tt.data, claim, store)
			if err != nil {
				t.Fatal(err)
			}
			if !v.Honest() {
				t.Fatalf("honest %s trainer failed replay: %s", tt.name, v.Reason)
			}
			claim.Commitment = forge(t, store, claim.Commitment, 3, 3, tt.like)
			if v, err = Replay(context.Background(), tt.task(nil), tt.data, claim, store); err != nil {
				t.Fatal(err)
			}
			if v.Honest() || v.FirstBadStep != 3 {
				t.Fatalf("forged step 3: named step %d: %s", v.FirstBadStep, v.Reason)
			}
			if v.Op == nil || v.Op.Phase != OpUpdate || v.Op.Tensor == "" || len(v.Op.Differ) != v.Op.Tensors {
				t.Fatalf("forged step 3: operation %+v", v.Op)
			}
			t.Log(v.Op.Text)
		})
	}
}

// replayChildEnv names the claim file a child test process replays.
const replayChildEnv = "FEDTUNE_TEST_REPLAY_CLAIM"

// TestReplayOnAnotherISA: a trainer on this CPU's best instruction set
// passes replay by an auditor on the pure-Go path (a child process with
// FEDTUNE_ENGINE_ISA=generic), checkpoints and all.
func TestReplayOnAnotherISA(t *testing.T) {
	if os.Getenv(replayChildEnv) != "" {
		t.Skip("the child replays in TestReplayChild")
	}
	f := newAuditFixture(t)
	store := &commitment.Store{Dir: t.TempDir()}
	u := f.train(t, f.task(t, auditSteps, 3, store), f.data)
	js, err := json.Marshal(struct {
		Claim Claim
		Dir   string
	}{claimOf(u), store.Dir})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "claim.json")
	if err := os.WriteFile(p, js, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestReplayChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), replayChildEnv+"="+p, engine.ISAEnv+"=generic")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "replayed on generic: honest") {
		t.Fatalf("replay on the pure-Go path: %v\n%s", err, out)
	}
	t.Logf("trained on %s, %s", engine.ISA(), strings.TrimSpace(string(out)))
}

// TestReplayChild is TestReplayOnAnotherISA's auditor.
func TestReplayChild(t *testing.T) {
	p := os.Getenv(replayChildEnv)
	if p == "" {
		t.Skip("run by TestReplayOnAnotherISA")
	}
	js, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var in struct {
		Claim Claim
		Dir   string
	}
	if err := json.Unmarshal(js, &in); err != nil {
		t.Fatal(err)
	}
	f := newAuditFixture(t)
	v := replay(t, f, in.Claim, &commitment.Store{Dir: in.Dir})
	if !v.Honest() {
		t.Fatalf("replayed on %s: %s", engine.ISA(), v.Reason)
	}
	t.Logf("replayed on %s: honest", engine.ISA())
}

// TestReplayDisclosedSteps: a commitment that discloses its step digests
// (as a trainer of a spot-checked job does) lets a replay without the
// trainer's checkpoints name the first step that differs; the digests
// hash to the step root model/commitment computes, and disclosed digests
// that do not are ignored.
func TestReplayDisclosedSteps(t *testing.T) {
	f := newAuditFixture(t)
	s := &commitment.Store{Dir: t.TempDir()}
	u := f.train(t, f.task(t, auditSteps, 3, s), f.data)
	c := claimOf(u)
	c.Commitment = forge(t, s, c.Commitment, auditSteps/2+1, auditSteps, f.ad.Tensors)
	ds, err := s.Digests("job-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if root, err := ledger.StepDigestsRoot(ds); err != nil || root != c.Commitment.StepRoot {
		t.Fatalf("ledger root %s (%v), commitment root %s", root, err, c.Commitment.StepRoot)
	}
	c.Commitment.StepDigests = ds
	v := replay(t, f, c, nil)
	if v.Honest() || v.FirstBadStep != auditSteps/2+1 {
		t.Fatalf("forged second half with disclosed steps, no checkpoints: step %d in (%d, %d], want %d: %s", v.FirstBadStep, v.After, v.Before, auditSteps/2+1, v.Reason)
	}
	// Disclosed digests that are not the committed root's pin nothing.
	c.Commitment.StepDigests = append([]string{ds[1]}, ds[1:]...)
	if v := replay(t, f, c, nil); v.FirstBadStep != 0 {
		t.Fatalf("digests off the root pinned step %d", v.FirstBadStep)
	}
}

func TestDescribeTensor(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight", "layer 3 q_proj lora_B"},
		{"base_model.model.model.layers.12.mlp.down_proj.lora_A.weight", "layer 12 down_proj lora_A"},
		{"model.layers.0.self_attn.o_proj.weight", "layer 0 o_proj weight"},
		{"model.layers.1.input_layernorm.weight", "layer 1 input_layernorm weight"},
		{"model.embed_tokens.weight", "model.embed_tokens.weight"},
		{"lm_head.weight", "lm_head.weight"},
	} {
		if got := DescribeTensor(tc.name); got != tc.want {
			t.Errorf("DescribeTensor(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
