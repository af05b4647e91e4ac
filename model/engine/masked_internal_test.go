package engine

import (
	"math"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
)

// gradsOf runs forward and backward on b without updating and returns the
// loss and every trainable parameter's gradient by name.
func gradsOf(t *testing.T, m *model.Model, lora bool, T int, b model.Batch) (float64, map[string][]float32) {
	t.Helper()
	tc := model.TrainConfig{Steps: 1, Batch: len(b.Tokens), SeqLen: T, LR: 1e-3}
	if lora {
		tc.LoRA = &model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "down_proj"}}
	}
	tr, err := NewTrainer(NewHost(), m, nil, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	loss, err := tr.lossAndGrad(b)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, p := range tr.params {
		g := make([]float32, p.g.Len())
		tr.dev.Read(g, p.g, 0)
		out[p.name] = g
	}
	if err := tr.dev.Sync(); err != nil {
		t.Fatal(err)
	}
	return loss, out
}

func tinyModel(t *testing.T, mod func(*model.Config)) *model.Model {
	t.Helper()
	c := modeltest.TinyConfig()
	if mod != nil {
		mod(&c)
	}
	m, err := model.New(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	modeltest.Randomise(m, 5)
	return m
}

func tokens(n, V int, seed uint64) []int {
	r := modeltest.RNG(seed, "doc")
	out := make([]int, n)
	for i := range out {
		out[i] = r.IntN(V)
	}
	return out
}

// TestPackedEqualsAlone packs two documents and padding into one window
// with weights a on the first document's targets and b on the second's and
// checks the loss and gradients against each document run alone through
// the plain (unweighted, unsegmented) step, combined with those weights.
func TestPackedEqualsAlone(t *testing.T) {
	for _, v := range []struct {
		name string
		mod  func(*model.Config)
		lora bool
	}{
		{"gqa-full", nil, false},
		{"tied-full", func(c *model.Config) { c.TieWordEmbeddings = true }, false},
		{"mha-lora", func(c *model.Config) { c.NumKeyValueHeads = 4 }, true},
	} {
		t.Run(v.name, func(t *testing.T) {
			m := tinyModel(t, v.mod)
			V := m.Config.VocabSize
			n1, n2, pad := 7, 9, 3
			d1, d2 := tokens(n1, V, 1), tokens(n2, V, 2)
			const a, b = 0.5, 2.0
			l1, g1 := gradsOf(t, m, v.lora, n1-1, model.Batch{Tokens: [][]int{d1}})
			l2, g2 := gradsOf(t, m, v.lora, n2-1, model.Batch{Tokens: [][]int{d2}})

			T := n1 + n2 + pad - 1
			win := append(append(append([]int{}, d1...), d2...), make([]int, pad)...)
			w, seg, pos := make([]float32, T), make([]int32, T), make([]int, T)
			for i := range T {
				switch {
				case i < n1:
					seg[i], pos[i] = 1, i
					if i < n1-1 {
						w[i] = a
					}
				case i < n1+n2:
					seg[i], pos[i] = 2, i-n1
					if i < n1+n2-1 {
						w[i] = b
					}
				default:
					pos[i] = i - n1 - n2
				}
			}
			// A second window holding the first document alone shows rows
			// do not mix: its weights are 0.
			win2 := append(append([]int{}, d1...), make([]int, T+1-n1)...)
			seg2, w2 := make([]int32, T), make([]float32, T)
			for i := range n1 {
				seg2[i] = 1
			}
			lp, gp := gradsOf(t, m, v.lora, T, model.Batch{Tokens: [][]int{win, win2},
				Loss: [][]float32{w, w2}, Segments: [][]int32{seg, seg2}, Positions: [][]int{pos, make([]int, T)}})

			W1, W2 := a*float64(n1-1), b*float64(n2-1)
			want := (W1*l1 + W2*l2) / (W1 + W2)
			if math.Abs(lp-want) > 1e-5*math.Abs(want) {
				t.Errorf("loss %v, want %v", lp, want)
			}
			for name, g := range gp {
				ref := make([]float32, len(g))
				for i := range ref {
					ref[i] = float32((W1*float64(g1[name][i]) + W2*float64(g2[name][i])) / (W1 + W2))
				}
				if d := relDiff(g, ref); d > 2e-4 {
					t.Errorf("%s: gradient differs by %.3g (relative)", name, d)
				}
			}
		})
	}
}

// relDiff returns max_i |got−want| / (|want| + rms(want)).
func relDiff(got, want []float32) float64 {
	var ss float64
	for _, v := range want {
		ss += float64(v) * float64(v)
	}
	floor := math.Sqrt(ss / float64(max(len(want), 1)))
	var worst float64
	for i := range want {
		e := math.Abs(float64(got[i])-float64(want[i])) / (math.Abs(float64(want[i])) + floor + 1e-30)
		if math.IsNaN(e) || e > worst {
			if math.IsNaN(e) {
				return math.Inf(1)
			}
			worst = e
		}
	}
	return worst
}

// TestStepBatchTrivialMasks: weights of one, one segment and positions in
// order give the plain step's loss and gradients, and scaling the weights
// changes nothing.
func TestStepBatchTrivialMasks(t *testing.T) {
	m := tinyModel(t, nil)
	const B, T = 2, 8
	toks := [][]int{tokens(T+1, m.Config.VocabSize, 4), tokens(T+1, m.Config.VocabSize, 5)}
	l0, g0 := gradsOf(t, m, false, T, model.Batch{Tokens: toks})
	for _, scale := range []float32{1, 3.5} {
		w, seg, pos := make([][]float32, B), make([][]int32, B), make([][]int, B)
		for b := range B {
			w[b], seg[b], pos[b] = make([]float32, T), make([]int32, T), make([]int, T)
			for i := range T {
				w[b][i], seg[b][i], pos[b][i] = scale, 7, i
			}
		}
		l, g := gradsOf(t, m, false, T, model.Batch{Tokens: toks, Loss: w, Segments: seg, Positions: pos})
		if math.Abs(l-l0) > 1e-6*l0 {
			t.Errorf("scale %v: loss %v, want %v", scale, l, l0)
		}
		for name := range g0 {
			if d := relDiff(g[name], g0[name]); d > 1e-5 {
				t.Errorf("scale %v: %s differs by %.3g", scale, name, d)
			}
		}
	}
}

// TestStepBatchRejects checks that bad masks are refused before anything
// changes, and that weights summing to 0 skip the step.
func TestStepBatchRejects(t *testing.T) {
	m := tinyModel(t, nil)
	const T = 4
	tr, err := NewTrainer(NewHost(), m, nil, model.TrainConfig{Steps: 2, Batch: 1, SeqLen: T, LR: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	toks := [][]int{tokens(T+1, m.Config.VocabSize, 9)}
	for _, tc := range []struct {
		b    model.Batch
		want string
	}{
		{model.Batch{Tokens: toks, Loss: [][]float32{{0, 0, 0, 0}}}, "sum to 0"},
		{model.Batch{Tokens: toks, Loss: [][]float32{{1, -1, 0, 0}}}, "not finite"},
		{model.Batch{Tokens: toks, Loss: [][]float32{{1, 1}}}, "want seq_len"},
		{model.Batch{Tokens: toks, Segments: [][]int32{{1}, {1}}}, "segment rows"},
		{model.Batch{Tokens: toks, Positions: [][]int{{0, 1, 2, 4}}}, "outside"},
	} {
		if _, err := tr.StepBatch(tc.b); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("StepBatch(%v) = %v, want an error with %q", tc.b, err, tc.want)
		}
	}
	if tr.StepCount() != 0 {
		t.Fatalf("%d steps taken by bad batches", tr.StepCount())
	}
	if _, err := tr.StepBatch(model.Batch{Tokens: toks, Loss: [][]float32{{0, 1, 1, 0}}}); err != nil {
		t.Fatal(err)
	}
}

// TestEvaluateMaskedMatchesStep: the masked eval of two documents equals
// the loss of a training step on them packed in one window with their
// masks, segments and positions.
func TestEvaluateMaskedMatchesStep(t *testing.T) {
	m := tinyModel(t, nil)
	V := m.Config.VocabSize
	n1, n2 := 6, 10
	d1, d2 := tokens(n1, V, 11), tokens(n2, V, 12)
	m1, m2 := make([]uint8, n1), make([]uint8, n2)
	for k := 3; k < n1; k++ {
		m1[k] = 1
	}
	for k := 4; k < n2; k += 2 {
		m2[k] = 1
	}
	res, err := EvaluateMasked(t.Context(), NewHost(), m, [][]int{d1, d2}, [][]uint8{m1, m2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	T := n1 + n2 - 1
	win := append(append([]int{}, d1...), d2...)
	mask := append(append([]uint8{}, m1...), m2...)
	w, seg, pos := make([]float32, T), make([]int32, T), make([]int, T)
	want := 0
	for i := range T {
		seg[i], pos[i] = 1, i
		if i >= n1 {
			seg[i], pos[i] = 2, i-n1
		}
		if mask[i+1] == 1 && (i+1 < n1 || i >= n1) {
			w[i] = 1
			want++
		}
	}
	loss, _ := gradsOf(t, m, false, T, model.Batch{Tokens: [][]int{win}, Loss: [][]float32{w},
		Segments: [][]int32{seg}, Positions: [][]int{pos}})
	if res.Tokens != want {
		t.Errorf("eval counted %d targets, want %d", res.Tokens, want)
	}
	if math.Abs(res.MeanNLL-loss) > 1e-5*loss {
		t.Errorf("eval mean NLL %v, step loss %v", res.MeanNLL, loss)
	}
}
