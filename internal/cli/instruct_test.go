package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
)

func TestInstructRender(t *testing.T) {
	dir := t.TempDir()
	cfg, err := os.ReadFile("../../model/chat/testdata/configs/smollm2.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, chat.ConfigFileName), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "d.jsonl")
	if err := os.WriteFile(data, []byte(`{"instruction":"Add","input":"2 3","output":"5"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model, text, trained, summary string
	}{
		{dir, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nAdd\n\n2 3<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n",
			"5<|im_end|>\n", "1 alpaca records"},
		{"", "Add\n\n2 3\n5\n", "5\n", "plain text"},
	} {
		var out, errb bytes.Buffer
		args := []string{"instruct", "render", data}
		if c.model != "" {
			args = append(args, "--model", c.model)
		}
		if err := RunWith(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var rec renderedRecord
		if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
			t.Fatalf("%q: %v", out.String(), err)
		}
		var trained []byte
		for k, m := range rec.Mask {
			if m == 1 {
				trained = append(trained, byte(rec.IDs[k])) // the byte tokenizer
			}
		}
		if rec.ID != "d.jsonl:1" || rec.Text != c.text || string(trained) != c.trained || !strings.Contains(errb.String(), c.summary) {
			t.Errorf("model %q: %+v (trained %q), stderr %q", c.model, rec, trained, errb.String())
		}
	}
}

// TestNoRaceTrainEvalInstruct trains on the shipped instruction set with a
// chat template and masked loss through fedtune train, and scores the
// held-out set's answers with fedtune eval before and after.
func TestNoRaceTrainEvalInstruct(t *testing.T) {
	fedtest.SkipUnderRace(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny.yaml", "--seed", "3", "-o", base)
	tc, err := os.ReadFile("../../model/chat/testdata/configs/llama2-chat.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, chat.ConfigFileName), tc, 0o644); err != nil {
		t.Fatal(err)
	}
	train, heldout := "../../datasets/testdata/instruct/train.jsonl", "../../datasets/testdata/instruct/heldout.jsonl"
	score := func(args ...string) model.EvalResult {
		t.Helper()
		var res model.EvalResult
		out := mustCLI(t, append([]string{"eval", "--model", base, "--data", heldout, "--json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("eval printed %q: %v", out, err)
		}
		return res
	}
	before := score()
	adapter := filepath.Join(dir, "adapter")
	mustCLI(t, "train", "--model", base, "--data", train, "-o", adapter, "--steps", "30", "--batch", "4", "--seq-len", "128",
		"--lr", "0.01", "--lora-rank", "4", "--seed", "1")
	after := score("--adapter", adapter)
	t.Logf("held-out masked NLL %.4f before, %.4f after, over %d answer tokens", before.MeanNLL, after.MeanNLL, after.Tokens)
	if before.Tokens != after.Tokens || before.Tokens == 0 || !(after.MeanNLL < before.MeanNLL) {
		t.Errorf("eval before %+v, after %+v", before, after)
	}
}

// TestDatasetManifestInstruct: fedtune dataset manifest and verify-manifest
// read an instruction file as a trainer node does, one sample per record.
func TestDatasetManifestInstruct(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "t.key")
	mustCLI(t, "keygen", "-o", key)
	data := "../../datasets/testdata/instruct/train.jsonl"
	manifest := filepath.Join(dir, "manifest.json")
	out := mustCLI(t, "dataset", "manifest", data, "--license", "CC0-1.0", "--source", "fedtune datasets/testdata/instruct", "--key", key, "-o", manifest)
	if !strings.Contains(out, "400 samples") {
		t.Fatalf("manifest printed %q", out)
	}
	if out := mustCLI(t, "dataset", "verify-manifest", manifest, data); !strings.HasPrefix(out, "OK:") {
		t.Fatalf("verify-manifest printed %q", out)
	}
}
