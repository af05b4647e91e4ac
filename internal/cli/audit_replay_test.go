package cli

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

// replayJob writes a small LoRA job over a tiny model and returns the job
// file and the model's digest.
func replayJob(t *testing.T) (string, string) {
	t.Helper()
	cfg, err := model.LoadConfigYAML("../../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := m.Save(filepath.Join(dir, "tiny"), safetensors.F32); err != nil {
		t.Fatal(err)
	}
	d, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("../../datasets/testdata/tasks/eval.jsonl")
	job := fmt.Sprintf(`name: replay
seed: 42
model:
  path: tiny
datasets:
  manifests: []
rounds: 1
trainers: {min: 1, max: 1, fraction: 1.0, max_samples: 0}
train: {local_steps: 3, batch: 2, seq_len: 16, lr: 0.01, weight_decay: 0.0, clip_norm: 1.0, warmup: 0, schedule: constant}
finetune:
  mode: lora
  lora: {rank: 2, alpha: 4, dropout: 0.0, targets: [q_proj]}
strategy: {name: fedavg, params: {}}
privacy: {clip: 0, noise_multiplier: 0, max_norm: 0}
compression: {kind: none, block: 0}
deadline: 5m
eval: {data: %s, every: 1}
`, abs)
	p := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(p, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, d
}

func TestAuditReplayTask(t *testing.T) {
	jobFile, base := replayJob(t)
	jf, err := coordinator.LoadJob(jobFile)
	if err != nil {
		t.Fatal(err)
	}
	const dataPath = "../../datasets/testdata/shards/trainer-1.jsonl"
	d, err := datasets.Load(dataPath, datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := datasets.SampleHashes(d)
	root := datasets.NewTree(hs).Root()
	ds := &ledger.Dataset{Digest: strings.Repeat("d", 64), Root: hex.EncodeToString(root[:]), Owner: "t1"}
	rd := &ledger.Round{JobID: "replay", Round: 1, ConfigDigest: jf.Digest(), BaseModel: base}
	st, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("job file of another config", func(t *testing.T) {
		bad := *rd
		bad.ConfigDigest = strings.Repeat("0", 64)
		if _, _, err := replayTask(jobFile, &bad, "t1", ds, dataPath, st, t.TempDir()); err == nil || !strings.Contains(err.Error(), "was opened with config "+bad.ConfigDigest) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("data that is not the registered dataset", func(t *testing.T) {
		if _, _, err := replayTask(jobFile, rd, "t1", ds, "../../datasets/testdata/shards/trainer-2.jsonl", st, t.TempDir()); err == nil || !strings.Contains(err.Error(), "not the trainer's data") {
			t.Fatalf("error %v", err)
		}
	})

	// The trainer trains the task it was given (seeded by the coordinator);
	// the audit rebuilds it from the job file and passes it, and catches a
	// trainer that used another seed.
	task, data, err := replayTask(jobFile, rd, "t1", ds, dataPath, st, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if task.Train.Seed != coordinator.TaskSeed(42, 1, "t1") || task.Train.Steps != 3 || task.Adapter == nil {
		t.Fatalf("task %+v", task.Train)
	}
	for _, tc := range []struct {
		name   string
		seed   uint64
		honest bool
	}{{"honest", task.Train.Seed, true}, {"another seed", task.Train.Seed + 1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			tt := task
			tt.Train.Seed, tt.OutDir = tc.seed, t.TempDir()
			store := &commitment.Store{Dir: t.TempDir()}
			tt.Checkpoints = store
			b, err := trainer.NewBackend(trainer.DeviceHost)
			if err != nil {
				t.Fatal(err)
			}
			u, err := b.Fit(context.Background(), tt, data)
			if err != nil {
				t.Fatal(err)
			}
			rt := task
			rt.OutDir = t.TempDir()
			v, err := trainer.Replay(context.Background(), rt, data, trainer.Claim{Job: "replay", Round: 1, UpdateDigest: u.Digest, Commitment: *u.Commitment}, store)
			if err != nil {
				t.Fatal(err)
			}
			if v.Honest() != tc.honest || (!tc.honest && v.FirstBadStep != 1) {
				t.Fatalf("honest %v, step %d: %s", v.Honest(), v.FirstBadStep, v.Reason)
			}
			var out strings.Builder
			if err := renderVerdict(&out, &v, "json"); err != nil || !strings.Contains(out.String(), `"honest": `+fmt.Sprint(tc.honest)) {
				t.Fatalf("json %s (%v)", out.String(), err)
			}
			if tc.honest {
				return
			}
			if !strings.Contains(out.String(), `"first_operation": {`) || !strings.Contains(out.String(), `"inputs_differ": [`) {
				t.Fatalf("json names no first operation or input: %s", out.String())
			}
			out.Reset()
			if err := renderVerdict(&out, &v, "text"); err != nil || !strings.Contains(out.String(), "\nfirst operation: step 1: first difference in the batch") {
				t.Fatalf("text %s (%v)", out.String(), err)
			}
		})
	}
}

// TestAuditReplayRenderOptState: a verdict that needs the starting
// optimizer state says it cannot judge (not that the replay differs); a
// forged starting state is named in text and JSON.
func TestAuditReplayRenderOptState(t *testing.T) {
	for _, tc := range []struct {
		name   string
		v      trainer.Verdict
		format string
		want   []string
	}{
		{"needs text", trainer.Verdict{NeedsOptState: true, Reason: "needs that starting optimizer state"}, "text",
			[]string{"replay CANNOT JUDGE: needs that starting optimizer state"}},
		{"needs json", trainer.Verdict{NeedsOptState: true, Reason: "r"}, "json", []string{`"needs_opt_state": true`, `"honest": false`}},
		{"lie json", trainer.Verdict{InputsMatch: true, StepsMatch: true, StepRootMatch: true, UpdateMatch: true,
			OptStateLie: fmt.Errorf("start-optstate.safetensors forged"), Reason: "forged (a lie)"}, "json",
			[]string{`"opt_state_lie": "start-optstate.safetensors forged"`, `"honest": false`}},
		{"lie text", trainer.Verdict{OptStateLie: fmt.Errorf("forged"), Reason: "forged (a lie)"}, "text", []string{"replay DIFFERS: forged (a lie)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			if err := renderVerdict(&out, &tc.v, tc.format); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output %q lacks %q", out.String(), w)
				}
			}
		})
	}
}

// TestAuditReplayDataPlan: which data a replay needs, and what it says
// when it is not given or the ledger's records disagree.
func TestAuditReplayDataPlan(t *testing.T) {
	pub := strings.Repeat("p", 64)
	own := &ledger.Dataset{Digest: strings.Repeat("d", 64)}
	published := &ledger.Dataset{Digest: pub, Published: true}
	rg := ledger.SampleRange{Dataset: pub, First: 8, End: 16}
	rd := &ledger.Round{JobID: "j", Round: 2, Ranges: []ledger.TrainerRange{{Trainer: "t1", Dataset: pub, First: 8, End: 16}}}
	for _, tc := range []struct {
		name      string
		rd        *ledger.Round
		u         ledger.Update
		ds        *ledger.Dataset
		published bool
		want      string
	}{
		{"own data, none given", &ledger.Round{JobID: "j", Round: 2}, ledger.Update{Trainer: "t1"}, own, false, "--data is required: trainer t1 trained round 2"},
		{"published asked, none assigned", &ledger.Round{JobID: "j", Round: 2}, ledger.Update{Trainer: "t1"}, own, true, "assigned trainer t1 no published samples"},
		{"ranges not the round's", rd, ledger.Update{Trainer: "t1", Ranges: []ledger.SampleRange{{Dataset: pub, First: 0, End: 8}}}, published, false,
			"names the published ranges"},
		{"own data besides ranges, none given", rd, ledger.Update{Trainer: "t1", Ranges: []ledger.SampleRange{rg}}, own, false, "--data is required too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := replayDataPlan(tc.rd, &tc.u, tc.ds, "", tc.published)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// What each needs when it is given.
	if own, ranges, err := replayDataPlan(rd, &ledger.Update{Trainer: "t1", Ranges: []ledger.SampleRange{rg}}, published, "", false); err != nil || own != nil || len(ranges) != 1 {
		t.Fatalf("published only: own %v, ranges %v, %v", own, ranges, err)
	}
	if own, ranges, err := replayDataPlan(rd, &ledger.Update{Trainer: "t1", Ranges: []ledger.SampleRange{rg}}, own, "data.jsonl", false); err != nil || own == nil || len(ranges) != 1 {
		t.Fatalf("own and published: own %v, ranges %v, %v", own, ranges, err)
	}
	if own, ranges, err := replayDataPlan(&ledger.Round{JobID: "j", Round: 2}, &ledger.Update{Trainer: "t1"}, own, "data.jsonl", false); err != nil || own == nil || len(ranges) != 0 {
		t.Fatalf("own only: own %v, ranges %v, %v", own, ranges, err)
	}
}
