package gorgoniaref

import (
	"context"
	"math"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// fixedBatches is a model.BatchSource cycling over seeded random windows.
type fixedBatches struct {
	b    [][][]int
	next int
}

func (f *fixedBatches) Next() [][]int {
	b := f.b[f.next%len(f.b)]
	f.next++
	return b
}

func randomBatches(n, batch, seq, V int, seed uint64) *fixedBatches {
	fb := &fixedBatches{}
	for i := 0; i < n; i++ {
		var b [][]int
		for j := 0; j < batch; j++ {
			// A learnable pattern: token t+1 = (token t + 1) mod V, from a random start.
			start := modeltest.IDs(1, V, seed+uint64(i*batch+j))[0]
			w := make([]int, seq+1)
			for k := range w {
				w[k] = (start + k) % V
			}
			b = append(b, w)
		}
		fb.b = append(fb.b, b)
	}
	return fb
}

func TestLRSchedule(t *testing.T) {
	tc := model.TrainConfig{LR: 1, Steps: 110, Warmup: 10, Schedule: model.ScheduleCosine}
	for _, c := range []struct {
		step int
		want float64
	}{{1, 0.1}, {10, 1}, {60, 0.5}, {110, 0}} {
		if got := tc.LRAt(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("cosine LRAt(%d) = %g, want %g", c.step, got, c.want)
		}
	}
	tc.Schedule = model.ScheduleConstant
	if tc.LRAt(1) != 1 || tc.LRAt(100) != 1 {
		t.Error("constant schedule is not constant")
	}
}

// TestAdamW checks one update against the formulas of Loshchilov & Hutter
// (as torch.optim.AdamW implements them), computed here in float64.
func TestAdamW(t *testing.T) {
	w := []float32{0.5, -1, 2}
	g := []float32{0.1, -0.2, 0}
	m := []float32{0.01, 0, -0.1}
	v := []float32{0.001, 0.002, 0.01}
	const lr, b1, b2, eps, wd, step = 0.01, 0.9, 0.999, 1e-8, 0.1, 3
	want := make([]float64, 3)
	for i := range w {
		mi := b1*float64(m[i]) + (1-b1)*float64(g[i])
		vi := b2*float64(v[i]) + (1-b2)*float64(g[i])*float64(g[i])
		mh := mi / (1 - math.Pow(b1, step))
		vh := vi / (1 - math.Pow(b2, step))
		want[i] = float64(w[i])*(1-lr*wd) - lr*mh/(math.Sqrt(vh)+eps)
	}
	adamW(w, g, m, v, 1, lr, b1, b2, float32(1-math.Pow(b1, step)), float32(1-math.Pow(b2, step)), eps, true, wd)
	for i := range w {
		if math.Abs(float64(w[i])-want[i]) > 1e-6 {
			t.Errorf("w[%d] = %g, want %g", i, w[i], want[i])
		}
	}
}

// TestTrainerSmall trains a tiny model on a learnable pattern, LoRA and
// full: the loss falls, two runs with one seed give identical weights, a
// different seed does not, LoRA leaves the base untouched, and heap use
// stays flat across steps.
func TestTrainerSmall(t *testing.T) {
	c := modeltest.TinyConfig()
	base, err := model.New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	baseDigest, _ := base.Digest()
	steps := 30
	if fedtest.RaceEnabled {
		steps = 8
	}
	run := func(lora bool, seed uint64) (first, last float64, digest string) {
		tc := model.TrainConfig{Steps: steps, Batch: 2, SeqLen: 12, LR: 3e-2, ClipNorm: 1, WeightDecay: 0.01, Warmup: 2, Seed: seed}
		if lora {
			tc.LoRA = &model.LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.1, Targets: []string{"q_proj", "v_proj", "gate_proj", "down_proj"}}
		}
		tr, err := NewTrainer(base, tc)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		src := randomBatches(4, 2, 12, c.VocabSize, 3)
		var heap [2]uint64
		for i := 0; i < steps; i++ {
			l, err := tr.Step(src.Next())
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = l
			}
			last = l
			if i == 2 || i == steps-1 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				heap[min(i-2, 1)] = ms.HeapAlloc
			}
		}
		if growth := int64(heap[1]) - int64(heap[0]); growth > 4<<20 {
			t.Errorf("heap grew by %d bytes over %d steps", growth, steps-3)
		}
		if lora {
			digest, _ = tr.Adapter().Digest()
		} else {
			digest, _ = tr.Model().Digest()
		}
		return first, last, digest
	}
	for _, lora := range []bool{true, false} {
		f1, l1, d1 := run(lora, 5)
		_, l2, d2 := run(lora, 5)
		_, _, d3 := run(lora, 6)
		t.Logf("lora=%v: loss %.4f -> %.4f", lora, f1, l1)
		if d1 != d2 || l1 != l2 {
			t.Errorf("lora=%v: two runs with one seed differ (%s vs %s)", lora, d1, d2)
		}
		if lora && d1 == d3 {
			t.Errorf("lora=%v: different seeds gave identical weights", lora)
		}
		if !fedtest.RaceEnabled && !(l1 < 0.8*f1) {
			t.Errorf("lora=%v: loss %.4f -> %.4f did not fall by 20%%", lora, f1, l1)
		}
	}
	if d, _ := base.Digest(); d != baseDigest {
		t.Error("training modified the base model passed in")
	}
}

func TestTrainerRejects(t *testing.T) {
	c := modeltest.TinyConfig()
	m, _ := model.New(c, 1)
	bad := []model.TrainConfig{
		{Steps: 0, Batch: 1, SeqLen: 4, LR: 1},
		{Steps: 1, Batch: 1, SeqLen: 64, LR: 1},
		{Steps: 1, Batch: 1, SeqLen: 4, LR: 0},
		{Steps: 1, Batch: 1, SeqLen: 4, LR: 1, Schedule: "linear"},
		{Steps: 1, Batch: 1, SeqLen: 4, LR: 1, LoRA: &model.LoRAConfig{Rank: 0, Alpha: 1, Targets: []string{"q_proj"}}},
		{Steps: 1, Batch: 1, SeqLen: 4, LR: 1, LoRA: &model.LoRAConfig{Rank: 1, Alpha: 1, Targets: []string{"qkv"}}},
	}
	for i, tc := range bad {
		if _, err := NewTrainer(m, tc); err == nil {
			t.Errorf("config %d accepted: %+v", i, tc)
		}
	}
	tr, err := NewTrainer(m, model.TrainConfig{Steps: 1, Batch: 1, SeqLen: 4, LR: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, b := range [][][]int{{{1, 2, 3}}, {{1, 2, 3, 4, 5}, {1, 2, 3, 4, 5}}, {{1, 2, 3, 4, 99}}, {{-1, 2, 3, 4, 5}}} {
		if _, err := tr.Step(b); err == nil {
			t.Errorf("batch %v accepted", b)
		}
	}
	if _, err := tr.Step([][]int{{1, 2, 3, 4, 5}}); err != nil {
		t.Errorf("a good batch after bad ones: %v", err)
	}
}

// TestNoRaceLoRAFineTuneTaskData is the end-to-end fine-tuning check: a
// tiny.yaml model is pre-trained briefly (full, 100 steps) on the shipped
// English text, then a LoRA adapter is trained on the shipped task set.
// Held-out mean NLL on tasks/eval.jsonl must fall below 0.7× its value
// under the pre-trained base; the base stays bit-identical; the adapter
// saved and reloaded scores the same.
func TestNoRaceLoRAFineTuneTaskData(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("slow")
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

	pre, err := NewTrainer(m, model.TrainConfig{Steps: 100, Batch: 8, SeqLen: 64, LR: 3e-3, Warmup: 10, ClipNorm: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pre.Run(ctx, datasets.NewBatcher(datasets.Windows(english, 64), 8, 1)); err != nil {
		t.Fatal(err)
	}
	pre.Close()
	base := pre.Model()
	baseDir := filepath.Join(t.TempDir(), "base")
	baseDigest, err := base.Save(baseDir, safetensors.F32)
	if err != nil {
		t.Fatal(err)
	}
	start, err := engine.Evaluate(ctx, engine.NewHost(), base, taskEval, nil)
	if err != nil {
		t.Fatal(err)
	}

	lc := &model.LoRAConfig{Rank: 8, Alpha: 16, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
	tr, err := NewTrainer(base, model.TrainConfig{LoRA: lc, Steps: 150, Batch: 8, SeqLen: 64, LR: 1e-2, Warmup: 10, ClipNorm: 1, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.Run(ctx, datasets.NewBatcher(datasets.Windows(taskTrain, 64), 8, 2)); err != nil {
		t.Fatal(err)
	}
	ad := tr.Adapter()
	merged, err := base.Merge(ad)
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
	if d, _ := model.DigestPath(baseDir); d != baseDigest {
		t.Error("base weights file changed")
	}
	if d, _ := base.Digest(); d != baseDigest {
		t.Error("LoRA training modified the base weights")
	}
	adDir := filepath.Join(t.TempDir(), "adapter")
	if _, err := ad.Save(adDir); err != nil {
		t.Fatal(err)
	}
	reBase, err := model.Load(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	reAd, err := model.LoadAdapter(adDir, reBase.Config)
	if err != nil {
		t.Fatal(err)
	}
	reMerged, err := reBase.Merge(reAd)
	if err != nil {
		t.Fatal(err)
	}
	again, err := engine.Evaluate(ctx, engine.NewHost(), reMerged, taskEval, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again != end {
		t.Errorf("reloaded adapter scores %+v, in memory %+v", again, end)
	}
}
