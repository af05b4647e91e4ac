package cli

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

// seedCheat trains every task with another seed than the one it was
// given: its update passes every check the network makes, and its
// commitment is consistent, but it is not the task's training.
type seedCheat struct{ trainer.Backend }

func (c seedCheat) Fit(ctx context.Context, t trainer.Task, d trainer.Data) (trainer.Update, error) {
	t.Train.Seed++
	return c.Backend.Fit(ctx, t, d)
}

// tensorCheat trains honestly, then changes one tensor of its state after
// step Step (and so every later state) in its checkpoints and commits to
// the changed states: consistent evidence of a training that did not
// happen. Tensor is the tensor it changed.
type tensorCheat struct {
	trainer.Backend
	Step   int
	Tensor *string
}

func (c tensorCheat) Fit(ctx context.Context, t trainer.Task, d trainer.Data) (trainer.Update, error) {
	u, err := c.Backend.Fit(ctx, t, d)
	if err != nil || t.Checkpoints == nil {
		return u, err
	}
	s := t.Checkpoints
	ds, err := s.Digests(t.JobID, t.Round)
	if err != nil {
		return u, err
	}
	for step := c.Step; step <= len(ds); step++ {
		p, err := s.Path(t.JobID, t.Round, step)
		if err != nil {
			return u, err
		}
		f, err := safetensors.Open(p)
		if err != nil {
			return u, err
		}
		st := map[string]*model.Tensor{}
		for _, ti := range f.Tensors() {
			x, err := f.Float32s(ti.Name)
			if err != nil {
				f.Close()
				return u, err
			}
			st[ti.Name] = &model.Tensor{Shape: ti.Shape, Data: x}
		}
		infos := f.Tensors()
		f.Close()
		for _, ti := range infos {
			if strings.Contains(ti.Name, "layers.1.") && *c.Tensor == "" {
				*c.Tensor = ti.Name
			}
		}
		st[*c.Tensor].Data[0] += 1e-3
		ts, err := commitment.Tensors(st)
		if err != nil {
			return u, err
		}
		if ds[step-1], err = s.Save(t.JobID, t.Round, step, ts); err != nil {
			return u, err
		}
	}
	if err := s.SaveDigests(t.JobID, t.Round, ds); err != nil {
		return u, err
	}
	c2 := *u.Commitment
	if c2.StepRoot, err = commitment.StepRoot(ds); err != nil {
		return u, err
	}
	u.Commitment = &c2
	return u, nil
}

// TestNoRaceAuditReplayNetwork runs a job on a real network whose data is
// partly published: trainer-1 trains its own shard and the published range
// the round gives it, trainer-2 has no data of its own and trains its
// range with another seed than its task's. `fedtune audit replay`, run
// against the ledger, the coordinator's artifact store (a copy) and each
// trainer's checkpoints, passes trainer-1 (--data for its own shard, the
// published samples read from the store) and names trainer-2's first
// differing step and operation with no data disclosed at all. trainer-3
// trains honestly but commits to states whose step 2 has one tensor
// changed: replay names step 2 and that tensor's update, the forward pass
// and the loss agreeing. With the auditor's copy of the published shards
// edited, replay refuses to judge, naming the shard and sample.
func TestNoRaceAuditReplayNetwork(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	var forged string
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true, Trainers: 3, MinTrainers: 3,
		JobName: "replay-net", Rounds: 1, LocalSteps: 3, PretrainSteps: 2,
		TrainerBackend: func(i int) trainer.Backend {
			if i == 1 {
				return nil
			}
			b, err := trainer.NewBackend(trainer.DeviceHost)
			if err != nil {
				t.Error(err)
				return nil
			}
			if i == 2 {
				return seedCheat{b}
			}
			return tensorCheat{Backend: b, Step: 2, Tensor: &forged}
		}})
	if err != nil {
		t.Fatal(err)
	}
	// trainer-2 has no data of its own.
	editYAML(t, filepath.Join(n.Dir, "trainer-2", "trainer.yaml"), func(m map[string]any) { delete(m, "data") })
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	ledgerFlags := []string{"--addr", n.LedgerGRPC[0], "--genesis", n.GenesisPath()}
	cli := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := RunWith(ctx, args, &out, &errb)
		return out.String(), err
	}
	// trainer-1 publishes the shipped shard the devnet would have given
	// trainer-2; the job trains on ranges of it.
	src := filepath.Join("..", "..", "datasets", "testdata", "shards", "trainer-2.jsonl")
	out, err := cli(append([]string{"dataset", "publish", src, "--name", "shard-two", "--license", "CC0-1.0", "--shard-samples", "64",
		"--key", filepath.Join(n.Dir, "keys", "trainer-1.key"), "--artifacts", n.Coordinator, "--artifacts-id", n.ID("coordinator")}, ledgerFlags...)...)
	if err != nil {
		t.Fatalf("publish: %q, %v", out, err)
	}
	digest := publishedDigest(t, out)
	// The record is on the ledger once a node answers for it.
	for {
		_, err := cli(append([]string{"dataset", "show", digest}, ledgerFlags...)...)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("published dataset %s (%s) never recorded: %v", digest, out, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	editYAML(t, n.JobFile, func(m map[string]any) {
		m["datasets"] = map[string]any{"published": []string{digest}, "range_samples": 8}
	})
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "done" || len(st.Rounds) != 1 {
		t.Fatalf("job ended %s (%s) with %d rounds", st.State, st.Detail, len(st.Rounds))
	}
	t.Logf("job done in %s (with setup)", time.Since(start).Round(time.Millisecond))

	// The auditor's copy of the coordinator's artifact store.
	store := filepath.Join(t.TempDir(), "artifacts")
	copyTree(t, filepath.Join(n.Dir, "coordinator", "artifacts"), store)
	replay := func(who string, extra ...string) (string, error) {
		cfg, err := trainer.LoadConfig(filepath.Join(n.Dir, who, "trainer.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		args := append([]string{"audit", "replay", "--job", "replay-net", "--round", "1", "--trainer", n.ID(who), "--job-file", n.JobFile,
			"--artifacts", store, "--checkpoints", cfg.Checkpoints().Dir}, ledgerFlags...)
		began := time.Now()
		out, err := cli(append(args, extra...)...)
		t.Logf("replay of %s (%s): %s%v", who, time.Since(began).Round(time.Millisecond), out, err)
		return out, err
	}
	// trainer-1 trained its own shard and its published range: replay
	// needs its own data disclosed, and reads the range from the store.
	if _, err := replay("trainer-1"); err == nil || !strings.Contains(err.Error(), "--data is required too") {
		t.Fatalf("replay of trainer-1 without its own data: %v", err)
	}
	if out, err := replay("trainer-1", "--data", n.Shards[0]); err != nil || !strings.HasPrefix(out, "replay matches: ") {
		t.Fatalf("honest trainer-1: %q, %v", out, err)
	}
	// The coordinator's own store, while the coordinator runs and holds
	// its lock: replay reads its files without opening the store.
	if out, err := replay("trainer-1", "--data", n.Shards[0], "--artifacts", filepath.Join(n.Dir, "coordinator", "artifacts")); err != nil || !strings.HasPrefix(out, "replay matches: ") {
		t.Fatalf("honest trainer-1 from the running coordinator's store: %q, %v", out, err)
	}
	// trainer-2 trained on published data only: nothing to disclose.
	out, err = replay("trainer-2", "--published")
	// (AdamW's first update moves by the sign of the gradient: another
	// batch may leave the same state after step 1, so the first differing
	// state may be step 2's.)
	if err == nil || !strings.Contains(out, "replay DIFFERS") || !strings.Contains(out, "is the first whose state differs") ||
		!strings.Contains(out, "disclosed inputs differ in seed ") || !strings.Contains(out, ": first difference in the batch") {
		t.Fatalf("cheating trainer-2: %q, %v", out, err)
	}
	// trainer-3's forged tensor is named, in step 2.
	out, err = replay("trainer-3", "--data", n.Shards[2])
	want := "first operation: step 2: first difference in " + trainer.DescribeTensor(forged) + " (AdamW update), 1 of "
	if err == nil || forged == "" || !strings.Contains(out, "step 2 is the first whose state differs") || !strings.Contains(out, want) ||
		!strings.Contains(out, "forward and loss agree") {
		t.Fatalf("cheating trainer-3: %q, %v; want %q", out, err, want)
	}

	// The auditor's copy of a published shard is edited: the replay
	// refuses it, naming the shard, rather than judge on other samples.
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := lc.Dataset(ctx, digest)
	lc.Close()
	if err != nil {
		t.Fatal(err)
	}
	ast, err := artifact.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range rec.Shards {
		p, err := ast.Path(sh.Digest)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		texts, err := dspub.DecodeShard(b)
		if err != nil {
			t.Fatal(err)
		}
		texts[0] += " (edited)"
		os.Chmod(p, 0o644)
		if err := os.WriteFile(p, dspub.EncodeShard(texts), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ast.Close()
	if out, err := replay("trainer-2"); err == nil || !strings.Contains(err.Error(), "shard ") || strings.Contains(out, "replay ") {
		t.Fatalf("replay on an edited shard: %q, %v", out, err)
	}
}

// publishedDigest reads the dataset digest `dataset publish` prints
// ("published NAME as DIGEST: …").
func publishedDigest(t *testing.T, out string) string {
	t.Helper()
	_, rest, ok := strings.Cut(out, " as ")
	if !ok || len(rest) < 64 || strings.Trim(rest[:64], "0123456789abcdef") != "" {
		t.Fatalf("no dataset digest in %q", out)
	}
	return rest[:64]
}

// editYAML rewrites a YAML file through edit.
func editYAML(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = yaml.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies the regular files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
