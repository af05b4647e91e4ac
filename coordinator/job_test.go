package coordinator

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/model"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files in testdata/")

const minimalJob = "name: j\nmodel: {digest: 0000000000000000000000000000000000000000000000000000000000000000}\n"

// pretrainJob is a pretrain job's head; its train section follows.
const pretrainJob = "name: j\nmodel: {init: tiny.yaml}\nfinetune: {mode: pretrain}\n"

// TestConfigJobs loads and validates every job in configs/jobs.
func TestConfigJobs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "configs", "jobs", "*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("want at least 5 jobs in configs/jobs, found %d (%v)", len(files), err)
	}
	digests := map[string]string{}
	for _, f := range files {
		j, err := LoadJob(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		d := j.Digest()
		if !digest.Valid(d) {
			t.Errorf("%s: digest %q", f, d)
		}
		if other, ok := digests[d]; ok {
			t.Errorf("%s and %s have the same digest", f, other)
		}
		digests[d] = f
		if j.Source != f {
			t.Errorf("%s: Source %q", f, j.Source)
		}
		if _, err := New(Config{Job: j, BaseModel: strings.Repeat("ab", 32)}); err != nil {
			t.Errorf("%s: New: %v", f, err)
		}
	}
}

// TestJobCanonicalGolden pins the canonical encoding (and so the config
// digest) of the devnet job; -update rewrites it.
func TestJobCanonicalGolden(t *testing.T) {
	j, err := LoadJob(filepath.Join("..", "configs", "jobs", "demo-lora.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(j.Canonical()) + "\n" + j.Digest() + "\n"
	golden := filepath.Join("testdata", "demo-lora.canonical")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("canonical encoding changed:\ngot  %s\nwant %s", got, want)
	}
}

// TestJobDigestMeaning: formatting, comments, key order and spelled-out
// defaults do not change the digest; any value does.
func TestJobDigestMeaning(t *testing.T) {
	a, err := ParseJob("a", []byte(minimalJob))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseJob("b", []byte("# a comment\nmodel:\n  digest: \"0000000000000000000000000000000000000000000000000000000000000000\"\nrounds: 1\nname: j\ndeadline: 600s\nstrategy: {name: fedavg, params: {}}\nfinetune: {mode: lora, lora: {rank: 8}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest() != b.Digest() {
		t.Errorf("same job, different digests:\n%s\n%s", a.Canonical(), b.Canonical())
	}
	c, err := ParseJob("c", []byte(minimalJob+"seed: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest() == c.Digest() {
		t.Error("a different seed gives the same digest")
	}
}

func TestJobDefaults(t *testing.T) {
	j, err := ParseJob("j", []byte(minimalJob))
	if err != nil {
		t.Fatal(err)
	}
	if j.Rounds != 1 || j.Trainers.Min != 1 || j.Strategy.Name != "fedavg" || j.FineTune.LoRA == nil || j.FineTune.LoRA.Rank != 8 || j.Deadline.Minutes() != 10 {
		t.Errorf("defaults not filled: %+v", j)
	}
	full, err := ParseJob("j", []byte(minimalJob+"finetune: {mode: full}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if full.FineTune.LoRA != nil {
		t.Error("mode full keeps the default adapter")
	}
	if j.Int8Block() != 0 {
		t.Error("Int8Block without int8")
	}
	q, err := ParseJob("j", []byte(minimalJob+"compression: {kind: int8}\n"))
	if err != nil || q.Int8Block() != DefaultInt8Block {
		t.Errorf("int8 default block: %v %v", err, q)
	}
}

// TestJobMaxSamples: the recipe bounds a trainer's claimed samples by
// trainers.max_samples, or by local_steps × batch when that is 0.
func TestJobMaxSamples(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want uint64
	}{
		{"default budget", minimalJob, 20 * 8},
		{"steps x batch", minimalJob + "train: {local_steps: 3, batch: 5}\n", 15},
		{"explicit zero", minimalJob + "trainers: {max_samples: 0}\ntrain: {local_steps: 3, batch: 5}\n", 15},
		{"explicit cap", minimalJob + "trainers: {max_samples: 7}\ntrain: {local_steps: 3, batch: 5}\n", 7},
		{"explicit equal", minimalJob + "trainers: {max_samples: 15}\ntrain: {local_steps: 3, batch: 5}\n", 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := ParseJob("x.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := j.MaxSamples(); got != tc.want {
				t.Errorf("MaxSamples = %d, want %d", got, tc.want)
			}
			r, err := j.Recipe([]string{strings.Repeat("ab", 32)}, "")
			if err != nil {
				t.Fatal(err)
			}
			if r.MaxSamples != tc.want {
				t.Errorf("recipe MaxSamples = %d, want %d", r.MaxSamples, tc.want)
			}
			if err := r.Validate(); err != nil {
				t.Errorf("recipe: %v", err)
			}
		})
	}
	// An explicit 0 is the default: the canonical encoding (the config
	// digest) does not change.
	a, _ := ParseJob("a", []byte(minimalJob))
	b, _ := ParseJob("b", []byte(minimalJob+"trainers: {max_samples: 0}\n"))
	c, _ := ParseJob("c", []byte(minimalJob+"trainers: {max_samples: 100}\n"))
	if a.Digest() != b.Digest() || a.Digest() == c.Digest() {
		t.Errorf("digests: default %s, explicit 0 %s, 100 %s", a.Digest(), b.Digest(), c.Digest())
	}
}

// TestJobErrors: every violation is reported, each naming its field (and
// decoding errors their file and line).
func TestJobErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"empty", "", []string{"x.yaml: the file is empty"}},
		{"unknown key", minimalJob + "trainers:\n  min: 1\n  maxx: 3\n", []string{`x.yaml:5: unknown key "maxx"`}},
		{"wrong type", minimalJob + "rounds: many\n", []string{"x.yaml:3: cannot unmarshal !!str `many` into int"}},
		{"two documents", minimalJob + "---\nname: k\n", []string{"more than one YAML document"}},
		{"no name or model", "rounds: 1\n", []string{"name: is required", "model: needs path or digest"}},
		{"rounds", minimalJob + "rounds: 0\n", []string{"rounds: must be ≥ 1"}},
		{"bad name", "name: 'a b'\nmodel: {path: m}\n", []string{`name: "a b" must be`}},
		{"bad digest", "name: j\nmodel: {digest: ABC}\n", []string{`model.digest: "ABC" is not a SHA-256 digest`}},
		{"manifests", minimalJob + "datasets: {manifests: [x, x]}\n", []string{"datasets.manifests[0]: \"x\" is not", "datasets.manifests[1]"}},
		{"trainers", minimalJob + "trainers: {min: 3, max: 2, fraction: 1.5}\n", []string{"trainers.max: 2 is below trainers.min 3", "trainers.fraction: must be in (0, 1]"}},
		{"min zero", minimalJob + "trainers: {min: 0}\n", []string{"trainers.min: must be ≥ 1"}},
		{"max_samples above budget", minimalJob + "trainers: {max_samples: 41}\ntrain: {local_steps: 5, batch: 8}\n",
			[]string{"trainers.max_samples: 41 is above train.local_steps × train.batch = 40"}},
		{"max_samples negative", minimalJob + "trainers: {max_samples: -1}\n", []string{"x.yaml:3:", "into uint64"}},
		{"train", minimalJob + "train: {local_steps: 0, batch: -1, seq_len: 0, lr: 0, weight_decay: -1, clip_norm: -1, schedule: linear}\n",
			[]string{"train.local_steps:", "train.batch:", "train.seq_len:", "train.lr:", "train.weight_decay:", "train.clip_norm:", "train.schedule: \"linear\""}},
		{"warmup", minimalJob + "train: {local_steps: 5, warmup: 5}\n", []string{"train.warmup: must be ≥ 0 and below train.local_steps 5"}},
		{"lora", minimalJob + "finetune: {lora: {rank: 0, alpha: -1, dropout: 1, targets: [q_proj, lm_head, q_proj]}}\n",
			[]string{"finetune.lora.rank:", "finetune.lora.alpha:", "finetune.lora.dropout:", `finetune.lora.targets[1]: "lm_head" is not one of`, `finetune.lora.targets[2]: "q_proj" is listed twice`}},
		{"lora empty targets", minimalJob + "finetune: {lora: {targets: []}}\n", []string{"finetune.lora.targets: is empty"}},
		{"full with lora", minimalJob + "finetune:\n  mode: full\n  lora: {rank: 4}\n", []string{"x.yaml:5: finetune.lora: must be absent"}},
		{"mode", minimalJob + "finetune: {mode: half}\n", []string{`finetune.mode: "half" is not`}},
		{"strategy name", minimalJob + "strategy: {name: fedsgd}\n", []string{`strategy.name: "fedsgd" is not a strategy (known: fedavg,`}},
		{"fedavg params", minimalJob + "strategy: {name: fedavg, params: {beta_1: 0.9, eta: 1}}\n",
			[]string{"strategy.params.beta_1: not a parameter of fedavg", "strategy.params.eta: not a parameter of fedavg"}},
		{"fedadam unknown", minimalJob + "strategy: {name: fedadam, params: {momentum: 0.9}}\n",
			[]string{"strategy.params.momentum: not a parameter of fedadam (it takes beta_1, beta_2, eta, tau)"}},
		{"fedavgm negative", minimalJob + "strategy: {name: fedavgm, params: {server_momentum: -1}}\n", []string{"strategy.params.server_momentum:", "negative"}},
		{"krum count", minimalJob + "strategy: {name: krum, params: {num_malicious: 1.5}}\n", []string{"strategy.params.num_malicious:", "non-negative integer"}},
		{"krum needs inputs", minimalJob + "trainers: {min: 3}\nstrategy: {name: krum, params: {num_malicious: 1}}\n", []string{"trainers.min: 3 updates are too few for krum"}},
		{"privacy", minimalJob + "privacy: {clip: -1, noise_multiplier: 1, max_norm: -2}\n",
			[]string{"privacy.clip: must be ≥ 0", "privacy.noise_multiplier: needs privacy.clip > 0", "privacy.max_norm: must be ≥ 0"}},
		{"compression", minimalJob + "compression: {kind: int4}\n", []string{`compression.kind: "int4" is not one of`}},
		{"block", minimalJob + "compression: {kind: f16, block: 32}\n", []string{`compression.block: applies only to kind int8, not "f16"`}},
		{"int8 block", minimalJob + "compression: {kind: int8, block: -3}\n", []string{"compression.block: must be in [1,"}},
		{"deadline", minimalJob + "deadline: 10ms\n", []string{"deadline: must be between 1s and"}},
		{"deadline unit", minimalJob + "deadline: soon\n", []string{"x.yaml:3:"}},
		{"eval", minimalJob + "eval: {every: 2}\n", []string{"eval.every: needs eval.data"}},
		{"pretrain no init", "name: j\nfinetune: {mode: pretrain}\ntrain: {inner_steps: 5}\n", []string{"model.init: is required with finetune.mode pretrain"}},
		{"pretrain with path", "name: j\nmodel: {path: m, init: tiny.yaml}\nfinetune: {mode: pretrain}\ntrain: {inner_steps: 5}\n", []string{"model.path: must be absent with finetune.mode pretrain"}},
		{"pretrain H zero", pretrainJob + "train: {inner_steps: 0}\n", []string{"train.inner_steps: must be ≥ 1", "got 0"}},
		{"pretrain H negative", pretrainJob + "train: {inner_steps: -50}\n", []string{"train.inner_steps: must be ≥ 1", "got -50"}},
		{"pretrain H missing", pretrainJob, []string{"train.inner_steps: must be ≥ 1", "got 0"}},
		{"pretrain H absurd", pretrainJob + "train: {inner_steps: 2000000}\n", []string{"train.inner_steps: must be ≥ 1 and ≤ 1000000"}},
		{"pretrain local_steps", pretrainJob + "train: {inner_steps: 5, local_steps: 7}\n", []string{"x.yaml:4: train.local_steps: a pretrain job gives its local steps as train.inner_steps (DiLoCo's H); local_steps 7, if written, must equal it"}},
		{"pretrain lr absurd", pretrainJob + "train: {inner_steps: 5, lr: 30}\n", []string{"train.lr: 30 is above 1"}},
		{"pretrain lr negative", pretrainJob + "train: {inner_steps: 5, lr: -0.1}\n", []string{"train.lr: must be a positive number"}},
		{"pretrain with lora", "name: j\nmodel: {init: tiny.yaml}\ntrain: {inner_steps: 5}\nfinetune:\n  mode: pretrain\n  lora: {rank: 4}\n", []string{"x.yaml:6: finetune.lora: must be absent when finetune.mode is pretrain"}},
		{"pretrain outer lr absurd", pretrainJob + "train: {inner_steps: 5}\nstrategy: {name: diloco, params: {learning_rate: 70}}\n", []string{"strategy.params.learning_rate: diloco learning_rate 70 must be in (0, 10]"}},
		{"pretrain outer lr zero", pretrainJob + "train: {inner_steps: 5}\nstrategy: {name: diloco, params: {learning_rate: 0}}\n", []string{"strategy.params.learning_rate: diloco learning_rate 0 must be in (0, 10]"}},
		{"pretrain momentum one", pretrainJob + "train: {inner_steps: 5}\nstrategy: {name: diloco, params: {momentum: 1}}\n", []string{"strategy.params.momentum: diloco momentum 1 must be in [0, 1)"}},
		{"inner_steps outside pretrain", minimalJob + "train: {inner_steps: 5}\n", []string{"train.inner_steps: applies only to finetune.mode pretrain"}},
		{"init outside pretrain", "name: j\nmodel: {init: tiny.yaml}\n", []string{"model.init: applies only to finetune.mode pretrain"}},
		{"lr absurd", minimalJob + "train: {lr: 2}\n", []string{"train.lr: 2 is above 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseJob("x.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrJob) {
				t.Errorf("error does not wrap ErrJob: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			var ve *ValidationError
			if errors.As(err, &ve) {
				for _, fe := range ve.Errors {
					if fe.Field == "" || fe.Msg == "" {
						t.Errorf("violation without field or message: %+v", fe)
					}
				}
			}
		})
	}
}

// FuzzParseJob: parsing never panics; an accepted job has a digest, and
// encoding it back to YAML and parsing again gives the same digest.
func FuzzParseJob(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "configs", "jobs", "*.yaml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(minimalJob))
	f.Add([]byte(minimalJob + "strategy: {name: krum, params: {num_malicious: 1}}\ntrainers: {min: 5}\n"))
	f.Add([]byte("name: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := ParseJob("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, ErrJob) {
				t.Fatalf("error does not wrap ErrJob: %v", err)
			}
			return
		}
		d := j.Digest()
		if !digest.Valid(d) {
			t.Fatalf("accepted job has no digest: %q", d)
		}
		out, err := yaml.Marshal(j)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		j2, err := ParseJob("again.yaml", out)
		if err != nil {
			t.Fatalf("re-parse of\n%s\n: %v", out, err)
		}
		if j2.Digest() != d {
			t.Fatalf("digest changed on round trip:\n%s\n%s", j.Canonical(), j2.Canonical())
		}
	})
}

// TestRecipeBaseModel: the recipe records round 1's base (model.digest;
// registerJob sets it for a job given by model.path), and a machine will
// not run a job whose recipe names another base than the one it opens
// round 1 on: the ledger would refuse the RoundOpened.
func TestRecipeBaseModel(t *testing.T) {
	j, err := ParseJob("j", []byte(minimalJob))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := j.Recipe([]string{strings.Repeat("a", 64)}, "")
	if err != nil || rc.BaseModel != j.Model.Digest {
		t.Fatalf("Recipe: base %q %v, want model.digest %s", rc.BaseModel, err, j.Model.Digest)
	}
	if _, err := New(Config{Job: j, Recipe: rc}); err != nil {
		t.Fatal(err)
	}
	rc.BaseModel = strings.Repeat("cd", 32)
	if _, err := New(Config{Job: j, Recipe: rc}); !errors.Is(err, ErrJob) || !strings.Contains(err.Error(), "the recipe's base model "+rc.BaseModel+" is not the job's "+j.Model.Digest) {
		t.Fatalf("New with another recipe base: %v", err)
	}
}

// TestPretrainJob: the shipped pretrain job parses with local_steps = H,
// its recipe says so, and its initial model is a function of the job's
// seed alone.
func TestPretrainJob(t *testing.T) {
	j, err := LoadJob(filepath.Join("..", "configs", "jobs", "pretrain-diloco.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if j.Train.InnerSteps != 50 || j.Train.LocalSteps != 50 || j.FineTune.LoRA != nil {
		t.Fatalf("inner_steps %d, local_steps %d, lora %v; want 50, 50, none", j.Train.InnerSteps, j.Train.LocalSteps, j.FineTune.LoRA)
	}
	r, err := j.Recipe([]string{strings.Repeat("ab", 32)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Mode != "pretrain" || r.InnerSteps != 50 || r.Strategy != "diloco" || r.Params["learning_rate"] != "1" || r.Params["momentum"] != "0.5" {
		t.Fatalf("recipe %+v", r)
	}
	r.BaseModel = strings.Repeat("cd", 32)
	if err := r.Validate(); err != nil {
		t.Fatalf("recipe: %v", err)
	}
	digestOf := func(j *Job) string {
		m, err := InitialModel(j)
		if err != nil {
			t.Fatal(err)
		}
		d, err := m.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d1 := digestOf(j)
	if d2 := digestOf(j); d2 != d1 {
		t.Fatalf("initial model not deterministic: %s then %s", d1, d2)
	}
	other := *j
	other.Seed++
	if digestOf(&other) == d1 {
		t.Fatal("another seed gives the same initial model")
	}
	// A job file whose local_steps disagrees with inner_steps (built in
	// code, not parsed) does not validate.
	bad := *j
	bad.Train.LocalSteps = 49
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "train.local_steps: 49 must equal train.inner_steps 50") {
		t.Fatalf("local_steps 49: %v", err)
	}
	// Not a pretrain job: no initial model.
	lora, err := ParseJob("x.yaml", []byte(minimalJob))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitialModel(lora); !errors.Is(err, ErrJob) {
		t.Fatalf("InitialModel of a LoRA job: %v", err)
	}
}

// TestPretrainInitPinned: a pretrain job pins its model.init config by
// content. The job's digest and its recipe's init_config change with the
// config's content, not its path; a job file pinning another digest, a
// config changed after the job was read, and config bytes that are not the
// recorded ones are each refused, naming the file or digest.
func TestPretrainInitPinned(t *testing.T) {
	tiny, err := os.ReadFile(filepath.Join("..", "configs", "models", "tiny.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("tiny.yaml", tiny)
	write("copy.yaml", append([]byte("# the same config, another file\n"), tiny...))
	wider := strings.Replace(string(tiny), "intermediate_size:", "intermediate_size: 200 #", 1)
	if wider == string(tiny) {
		t.Fatal("tiny.yaml has no intermediate_size to change")
	}
	write("wider.yaml", []byte(wider))
	load := func(init, extra string) (*Job, error) {
		p := write("job-"+init, []byte("name: j\nmodel: {init: "+init+extra+"}\nfinetune: {mode: pretrain}\ntrain: {inner_steps: 5}\n"))
		return LoadJob(p)
	}
	a, err := load("tiny.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := model.LoadConfigYAML(filepath.Join(dir, "tiny.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	canon, err := cfg.EncodeJSON()
	if err != nil {
		t.Fatal(err)
	}
	if a.Model.InitDigest != digest.Bytes(canon) {
		t.Fatalf("init_digest %s, want the canonical config's %s", a.Model.InitDigest, digest.Bytes(canon))
	}
	rc, err := a.Recipe([]string{strings.Repeat("ab", 32)}, "")
	if err != nil || rc.InitConfig != a.Model.InitDigest || rc.InitSeed != InitSeed(a.Seed) {
		t.Fatalf("recipe init_config %q seed %d (%v); want %s, %d", rc.InitConfig, rc.InitSeed, err, a.Model.InitDigest, InitSeed(a.Seed))
	}
	// Another file with the same config: the same pin and the same job
	// digest but for the path; a config of other content: another pin.
	b, err := load("copy.yaml", "")
	if err != nil || b.Model.InitDigest != a.Model.InitDigest {
		t.Fatalf("copy.yaml: pin %q (%v), want %s", b.Model.InitDigest, err, a.Model.InitDigest)
	}
	w, err := load("wider.yaml", "")
	if err != nil || w.Model.InitDigest == a.Model.InitDigest {
		t.Fatalf("wider.yaml: pin %q (%v), want one other than %s", w.Model.InitDigest, err, a.Model.InitDigest)
	}
	wrc, _ := w.Recipe([]string{strings.Repeat("ab", 32)}, "")
	if wrc.InitConfig == rc.InitConfig {
		t.Fatal("recipes of different init configs record the same init_config")
	}
	// A job file that pins a digest its config does not have.
	_, err = load("wider.yaml", ", init_digest: "+a.Model.InitDigest)
	if !errors.Is(err, ErrJob) || !strings.Contains(err.Error(), "wider.yaml is a model config of digest "+w.Model.InitDigest+", but model.init_digest pins "+a.Model.InitDigest) {
		t.Fatalf("mismatched init_digest: %v", err)
	}
	if _, err := load("tiny.yaml", ", init_digest: "+a.Model.InitDigest); err != nil {
		t.Fatalf("matching init_digest: %v", err)
	}
	if _, err := load("tiny.yaml", ", init_digest: tiny"); err == nil || !strings.Contains(err.Error(), `model.init_digest: "tiny" is not a SHA-256 digest`) {
		t.Fatalf("init_digest not a digest: %v", err)
	}
	if _, err := ParseJob("x.yaml", []byte("name: j\nmodel: {path: m, init_digest: "+a.Model.InitDigest+"}\n")); err == nil || !strings.Contains(err.Error(), "model.init_digest: applies only to finetune.mode pretrain") {
		t.Fatalf("init_digest in a LoRA job: %v", err)
	}
	// The config changes on disk after the job was read.
	m1, err := InitialModel(a)
	if err != nil {
		t.Fatal(err)
	}
	write("tiny.yaml", []byte(wider))
	if _, err := InitialModel(a); !errors.Is(err, ErrJob) || !strings.Contains(err.Error(), "tiny.yaml is now a model config of digest "+w.Model.InitDigest+", but job j pins "+a.Model.InitDigest) {
		t.Fatalf("changed config: %v", err)
	}
	// From the recorded bytes: the same model; other bytes refused.
	m2, err := InitialModelFrom(canon, rc.InitConfig, rc.InitSeed)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := m1.Digest()
	if d2, _ := m2.Digest(); d1 != d2 {
		t.Fatalf("InitialModelFrom gives %s, InitialModel %s", d2, d1)
	}
	if _, err := InitialModelFrom(append(canon, ' '), rc.InitConfig, rc.InitSeed); err == nil || !strings.Contains(err.Error(), "hash to") {
		t.Fatalf("other bytes: %v", err)
	}
	spaced := append([]byte{' '}, canon...)
	if _, err := InitialModelFrom(spaced, digest.Bytes(spaced), rc.InitSeed); err == nil || !strings.Contains(err.Error(), "not a model config in canonical form") {
		t.Fatalf("non-canonical bytes: %v", err)
	}
}
