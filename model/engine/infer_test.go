package engine_test

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"testing"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
)

// runnerLogProbs runs the engine's Runner on the Host, on every prefix of
// ids in turn when stepwise (as generation does: the last row of each),
// else on ids as one sequence.
func runnerLogProbs(t *testing.T, m *model.Model, ids []int, stepwise bool) [][]float64 {
	t.Helper()
	r, err := engine.NewRunner(engine.NewHost(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}()
	V := m.Config.VocabSize
	var logits []float32
	if stepwise {
		for i := range ids {
			l, err := r.Logits(ids[:i+1])
			if err != nil {
				t.Fatal(err)
			}
			logits = append(logits, l[i*V:]...)
		}
	} else if logits, err = r.Logits(ids); err != nil {
		t.Fatal(err)
	}
	return modeltest.LogProbs(logits, V)
}

func TestRunnerMatchesReference(t *testing.T) {
	for i, v := range modeltest.Variants {
		t.Run(v.Name, func(t *testing.T) {
			m := modeltest.VariantModel(t, v, uint64(200+i))
			ids := modeltest.IDs(11, m.Config.VocabSize, uint64(i))
			want := modeltest.RefLogProbs(m, nil, ids)
			for _, step := range []bool{false, true} {
				if d := modeltest.MaxDiff(runnerLogProbs(t, m, ids, step), want); d > 1e-4 {
					t.Errorf("runner (stepwise=%v) differs from the reference by %g", step, d)
				}
			}
		})
	}
}

// TestRunnerAdapter checks a merged adapter in the Runner against the
// reference with the adapter unmerged.
func TestRunnerAdapter(t *testing.T) {
	m, ad := modeltest.AdaptedModel(t)
	c := m.Config
	ids := modeltest.IDs(10, c.VocabSize, 9)
	merged, err := m.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	if d := modeltest.MaxDiff(runnerLogProbs(t, merged, ids, true), modeltest.RefLogProbs(m, ad, ids)); d > 1e-4 {
		t.Errorf("merged model in the runner differs from the reference by %g", d)
	}
}

// TestEvaluateWindows checks Evaluate's windowing against the reference:
// non-overlapping windows of max_position_embeddings (32 here), each
// predicting its own tokens 1..n-1; a final window of one token adds none.
func TestEvaluateWindows(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[0], 8)
	L := m.Config.MaxPositionEmbeddings
	for _, n := range []int{2, 10, 32, 33, 70} {
		toks := modeltest.IDs(n, m.Config.VocabSize, uint64(n))
		var sum float64
		var count int
		for s := 0; s < n; s += L {
			w := toks[s:min(s+L, n)]
			if len(w) < 2 {
				continue
			}
			lp := modeltest.RefLogProbs(m, nil, w[:len(w)-1])
			for i := range lp {
				sum -= lp[i][w[i+1]]
				count++
			}
		}
		res, err := engine.Evaluate(context.Background(), engine.NewHost(), m, toks, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Tokens != count || math.Abs(res.MeanNLL-sum/float64(count)) > 1e-5 ||
			math.Abs(res.Perplexity-math.Exp(res.MeanNLL)) > 1e-9*res.Perplexity {
			t.Errorf("n=%d: got %+v, want %d tokens, mean NLL %g", n, res, count, sum/float64(count))
		}
	}
	if _, err := engine.Evaluate(context.Background(), engine.NewHost(), m, []int{1}, nil); err == nil {
		t.Error("one token evaluated")
	}
}

func TestGenerate(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[2], 9)
	prompt := []int{1, 2, 3}
	ctx := context.Background()
	greedy, err := engine.Generate(ctx, engine.NewHost(), m, prompt, model.GenerateConfig{MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	// Greedy generation picks the reference's argmax at every step.
	seq := append([]int{}, prompt...)
	for _, tok := range greedy {
		lp := modeltest.RefLogProbs(m, nil, seq)
		last := lp[len(lp)-1]
		best := 0
		for i := range last {
			if last[i] > last[best] {
				best = i
			}
		}
		if tok != best {
			t.Fatalf("greedy token %d, reference argmax %d", tok, best)
		}
		seq = append(seq, tok)
	}
	a, _ := engine.Generate(ctx, engine.NewHost(), m, prompt, model.GenerateConfig{MaxTokens: 20, Temperature: 1, TopP: 0.9, Seed: 3})
	b, _ := engine.Generate(ctx, engine.NewHost(), m, prompt, model.GenerateConfig{MaxTokens: 20, Temperature: 1, TopP: 0.9, Seed: 3})
	if fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 20 {
		t.Errorf("seeded sampling not repeatable: %v vs %v", a, b)
	}
	// The context bounds generation.
	long, err := engine.Generate(ctx, engine.NewHost(), m, modeltest.IDs(30, m.Config.VocabSize, 1), model.GenerateConfig{MaxTokens: 10})
	if err != nil || len(long) != 3 {
		t.Errorf("near a full context: %d tokens, %v (want 3 = 32 - 30 + 1)", len(long), err)
	}
	if _, err := engine.Generate(ctx, engine.NewHost(), m, modeltest.IDs(33, m.Config.VocabSize, 1), model.GenerateConfig{MaxTokens: 1}); err == nil {
		t.Error("a prompt longer than the context was accepted")
	}
}

// TestRunnerLongContext: a Runner's activations and rotary tables are
// sized to the sequence it runs (a long context costs nothing up front),
// and the results are the reference's over every prefix of a long sequence.
func TestRunnerLongContext(t *testing.T) {
	c := modeltest.TinyConfig()
	c.MaxPositionEmbeddings = 1 << 22 // activations sized for 4M positions would be gigabytes
	m, err := model.New(c, 5)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := engine.NewRunner(engine.NewHost(), m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Logits([]int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// A Host keeps some scratch of its own (the sgemm's packed panels):
	// allow a few MiB, far below what the context would take (the race
	// detector's runtime allocates more).
	if a := after.TotalAlloc - before.TotalAlloc; a > 8<<20 && !fedtest.RaceEnabled {
		t.Errorf("a runner for a 4M-position context allocated %d bytes for 3 tokens", a)
	}

	c.MaxPositionEmbeddings = 300
	m, _ = model.New(c, 5)
	ids := modeltest.IDs(260, c.VocabSize, 5)
	want := modeltest.RefLogProbs(m, nil, ids)
	for _, stepwise := range []bool{false, true} {
		if d := modeltest.MaxDiff(runnerLogProbs(t, m, ids, stepwise), want); d > 1e-4 {
			t.Errorf("stepwise=%v: runner differs from the reference by %g over 260 positions", stepwise, d)
		}
	}
}
