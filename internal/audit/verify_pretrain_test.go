package audit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// pretrainFixture is a pretrain job appended to newTestChain's chain: its
// recipe pins the tiny config (init_config, in the artifacts) and the
// seed of job seed 11, and its round 1 opens from start.
type pretrainFixture struct {
	c       *testChain
	config  string // the canonical tiny config's digest
	seed    uint64 // coordinator.InitSeed(11)
	init    string // the model config and seed initialise
	jobFile string // the job's file, model.init the tiny config
}

const pretrainJobID = "pre-1"

// newPretrainChain builds the chain; start picks round 1's base from the
// honest initial model's digest and the artifacts folder (a liar
// registers a model of its own).
func newPretrainChain(t *testing.T, start func(init, dir string) string) *pretrainFixture {
	t.Helper()
	f := &pretrainFixture{c: newTestChain(t), seed: coordinator.InitSeed(11)}
	c := f.c
	tiny, err := filepath.Abs(filepath.Join("..", "..", "configs", "models", "tiny.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := model.LoadConfigYAML(tiny)
	if err != nil {
		t.Fatal(err)
	}
	canon, err := cfg.EncodeJSON()
	if err != nil {
		t.Fatal(err)
	}
	f.config = put(t, c.artifacts, canon, true)
	f.init = putModel(t, c.artifacts, cfg, f.seed)
	f.jobFile = writePretrainJob(t, tiny)
	job, err := coordinator.LoadJob(f.jobFile)
	if err != nil {
		t.Fatal(err)
	}
	base := start(f.init, c.artifacts)
	c.apply(t, c.coord.sign(t, ledger.ModelRegistered{Digest: base, Name: "init", Licence: "CC0-1.0", Source: "fedtune init: tiny.yaml"}),
		c.coord.sign(t, ledger.JobRegistered{JobID: pretrainJobID, Recipe: ledger.RoundRecipe{Strategy: "diloco",
			Params: map[string]string{"learning_rate": "0.7", "momentum": "0.9"}, Compression: "none", MinTrainers: 1,
			Aggregators: []string{c.agg.id}, BaseModel: base, Mode: ledger.RecipePretrain, InnerSteps: 5, InitConfig: f.config, InitSeed: f.seed}}))
	c.apply(t, c.coord.sign(t, ledger.RoundOpened{JobID: pretrainJobID, Round: 1, ConfigDigest: job.Digest(), BaseModel: base,
		Strategy: "diloco", Trainers: []string{c.trainers[0].id}, Deadline: t0.Add(24 * time.Hour)}))
	return f
}

// putModel stores the model config and seed initialise and returns its
// digest.
func putModel(t *testing.T, dir string, cfg model.Config, seed uint64) string {
	t.Helper()
	m, err := model.New(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "m")
	d, err := m.Save(out, safetensors.F32)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(out, model.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if put(t, dir, data, true) != d {
		t.Fatal("model digest is not its file's SHA-256")
	}
	return d
}

// writePretrainJob writes the pretrain job's file with model.init config.
func writePretrainJob(t *testing.T, config string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pre-1.yaml")
	job := "name: " + pretrainJobID + "\nseed: 11\nmodel: {init: " + config + "}\nfinetune: {mode: pretrain}\ntrain: {inner_steps: 5}\n" +
		"strategy: {name: diloco, params: {learning_rate: 0.7, momentum: 0.9}}\n"
	if err := os.WriteFile(p, []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A pretrain job's initial model is recomputed from the config and seed
// its recipe records (the config read from the artifacts, checked by
// digest), with or without the job file. The lies: a coordinator whose
// round-1 model is not what the recorded config and seed give; an
// auditor handed a job file whose model.init is another config; a config
// artifact that is not the recorded one. Each is named.
func TestVerifyPretrainInit(t *testing.T) {
	ctx := context.Background()
	honest := newPretrainChain(t, func(init, _ string) string { return init })
	e := honest.c.export(t)
	for _, jobs := range [][]string{nil, {honest.jobFile}} {
		rep, err := Verify(ctx, e, VerifyOptions{Artifacts: honest.c.artifacts, Jobs: jobs})
		if err != nil || rep.InitModels != 1 {
			t.Fatalf("honest pretrain chain (job files %v): %+v %v, want 1 initial model recomputed", jobs, rep, err)
		}
	}

	// The coordinator starts round 1 from a model of its own, registered
	// and in the artifacts, while its recipe says the tiny config and seed.
	var other string
	liar := newPretrainChain(t, func(_, dir string) string {
		cfg, err := model.LoadConfigYAML(filepath.Join("..", "..", "configs", "models", "tiny.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		other = putModel(t, dir, cfg, 424242)
		return other
	})
	_, err := Verify(ctx, liar.c.export(t), VerifyOptions{Artifacts: liar.c.artifacts})
	var m *Mismatch
	want := "pretrain job \"pre-1\" round 1 starts from " + other + ", but its recipe's init_config " + liar.config
	if !errors.As(err, &m) || m.Field != "base_model" || !strings.Contains(m.Msg, want) || !strings.Contains(m.Msg, liar.init) {
		t.Fatalf("lying coordinator: %v, want a base_model mismatch saying %q and naming %s", err, want, liar.init)
	}
	t.Logf("lying coordinator: %v", err)

	// An auditor handed a job file whose model.init is another config.
	wider := filepath.Join(t.TempDir(), "wider.yaml")
	tiny, err := os.ReadFile(filepath.Join("..", "..", "configs", "models", "tiny.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wider, []byte(strings.Replace(string(tiny), "intermediate_size:", "intermediate_size: 200 #", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	wrong := writePretrainJob(t, wider)
	for _, art := range []string{"", honest.c.artifacts} {
		_, err = Verify(ctx, e, VerifyOptions{Artifacts: art, Jobs: []string{wrong}})
		if !errors.As(err, &m) || m.Field != "recipe.init_config" || !strings.Contains(m.Msg, "the job file "+wrong+" has model.init "+wider) ||
			!strings.Contains(m.Msg, "records init_config \""+honest.config+"\"") {
			t.Fatalf("another config file (artifacts %q): %v, want a recipe.init_config mismatch naming %s and %s", art, err, wider, honest.config)
		}
	}
	t.Logf("another config file: %v", err)

	// The config in the artifacts is not the one the recipe records.
	p, _ := ArtifactPath(honest.c.artifacts, honest.config)
	if err := os.WriteFile(p, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(ctx, e, VerifyOptions{Artifacts: honest.c.artifacts})
	if !errors.As(err, &m) || m.Field != "recipe.init_config" || !strings.Contains(m.Msg, "hashes to") {
		t.Fatalf("tampered config artifact: %v, want a recipe.init_config mismatch", err)
	}
	t.Logf("tampered config artifact: %v", err)
}
