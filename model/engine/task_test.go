package engine_test

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// TestNoRaceLoRAFineTuneTaskData is model's end-to-end fine-tuning check
// run on the engine (Host device): a tiny.yaml model is pre-trained
// briefly (full fine-tuning, 100 steps) on the shipped English text, then a
// LoRA adapter is trained on the shipped task set. Held-out mean NLL on
// tasks/eval.jsonl (scored by Evaluate on the merged model) must fall
// below 0.7× its value under the pre-trained base, and the base must stay
// bit-identical.
func TestNoRaceLoRAFineTuneTaskData(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("slow")
	}
	if engine.ISA() == "generic" && runtime.GOARCH == "amd64" {
		// Minutes on the pure-Go twins, and nothing to learn: they give
		// the bits the default build gives (TestTrainingBitExact, make
		// test-bitexact), and the default build runs this test.
		t.Skip("pure-Go path on amd64: same bits as the default build, which runs this test")
	}
	ctx := context.Background()
	c, err := model.LoadConfigYAML("../../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load("", c.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	load := func(p string) []int {
		ds, err := datasets.Load(p, datasets.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return datasets.Tokenize(ds, tok)
	}
	english := load("../../datasets/testdata/english/train.txt")
	taskTrain := load("../../datasets/testdata/tasks/train.jsonl")
	taskEval := load("../../datasets/testdata/tasks/eval.jsonl")
	taskEval = taskEval[:min(len(taskEval), 6000)]

	pre := newTrainer(t, m, nil, model.TrainConfig{Steps: 100, Batch: 8, SeqLen: 64, LR: 3e-3, Warmup: 10, ClipNorm: 1, Seed: 1})
	first, err := pre.Step(datasets.NewBatcher(datasets.Windows(english, 64), 8, 1).Next())
	if err != nil {
		t.Fatal(err)
	}
	last, err := pre.Run(ctx, datasets.NewBatcher(datasets.Windows(english, 64), 8, 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pre-training loss %.4f -> %.4f", first, last)
	base := pre.Model()
	baseDigest, err := base.Digest()
	if err != nil {
		t.Fatal(err)
	}
	start, err := engine.Evaluate(ctx, engine.NewHost(), base, taskEval, nil)
	if err != nil {
		t.Fatal(err)
	}

	lc := &model.LoRAConfig{Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
	steps := 0
	tr := newTrainer(t, base, nil, model.TrainConfig{LoRA: lc, Steps: 150, Batch: 8, SeqLen: 64, LR: 1e-2, Warmup: 10, ClipNorm: 1, Seed: 2,
		Progress: func(step int, loss, tokPerSec float64) {
			steps++
			if step != steps || !(tokPerSec > 0) {
				t.Errorf("progress: step %d (call %d), %g tok/s", step, steps, tokPerSec)
			}
		}})
	if _, err := tr.Run(ctx, datasets.NewBatcher(datasets.Windows(taskTrain, 64), 8, 2)); err != nil {
		t.Fatal(err)
	}
	if steps != 150 || tr.StepCount() != 150 || tr.Tokens() != 150*8*64 {
		t.Errorf("progress calls %d, StepCount %d, Tokens %d", steps, tr.StepCount(), tr.Tokens())
	}
	merged, err := base.Merge(tr.Adapter())
	if err != nil {
		t.Fatal(err)
	}
	end, err := engine.Evaluate(ctx, engine.NewHost(), merged, taskEval, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("held-out task NLL: pre-trained base %.4f (ppl %.1f) -> LoRA %.4f (ppl %.1f), ratio %.3f over %d tokens",
		start.MeanNLL, start.Perplexity, end.MeanNLL, end.Perplexity, end.MeanNLL/start.MeanNLL, end.Tokens)
	if !(end.MeanNLL < 0.7*start.MeanNLL) {
		t.Errorf("held-out NLL %.4f -> %.4f: not below 0.7× the start", start.MeanNLL, end.MeanNLL)
	}
	if d, _ := tr.Model().Digest(); d != baseDigest {
		t.Error("LoRA training changed the base weights on the device")
	}
	if d, _ := base.Digest(); d != baseDigest {
		t.Error("LoRA training modified the caller's base model")
	}

	// Run stops at cfg.Steps, and on a cancelled context.
	if _, err := tr.Run(ctx, datasets.NewBatcher(datasets.Windows(taskTrain, 64), 8, 3)); err != nil || tr.StepCount() != 150 {
		t.Errorf("Run after the last step: err %v, StepCount %d", err, tr.StepCount())
	}
	more := newTrainer(t, base, nil, model.TrainConfig{LoRA: lc, Steps: 5, Batch: 8, SeqLen: 64, LR: 1e-2})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := more.Run(cctx, datasets.NewBatcher(datasets.Windows(taskTrain, 64), 8, 3)); !errors.Is(err, context.Canceled) || more.StepCount() != 0 {
		t.Errorf("Run on a cancelled context: err %v, StepCount %d", err, more.StepCount())
	}
}
