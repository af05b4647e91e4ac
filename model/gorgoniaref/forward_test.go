package gorgoniaref

import (
	"testing"

	"gorgonia.org/tensor"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
)

// graphLogProbs runs the Gorgonia forward on one window of ids.
func graphLogProbs(t *testing.T, m *model.Model, ad *model.Adapter, ids []int, dt tensor.Dtype) [][]float64 {
	t.Helper()
	sp := graphSpec{B: 1, T: len(ids), dt: dt}
	if ad != nil {
		sp.lora, sp.adapter = &ad.Config, ad
	}
	gr, err := buildGraph(m, sp)
	if err != nil {
		t.Fatal(err)
	}
	defer gr.close()
	win := append(append([]int{}, ids...), 0)
	if err := gr.setBatch([][]int{win}); err != nil {
		t.Fatal(err)
	}
	if _, err := gr.run(); err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	out := make([][]float64, len(ids))
	for i := range out {
		out[i] = make([]float64, V)
		switch d := gr.logpV.Data().(type) {
		case []float32:
			for j := range out[i] {
				out[i][j] = float64(d[i*V+j])
			}
		case []float64:
			copy(out[i], d[i*V:(i+1)*V])
		}
	}
	return out
}

func TestGraphForwardMatchesReference(t *testing.T) {
	for i, v := range modeltest.Variants {
		t.Run(v.Name, func(t *testing.T) {
			m := modeltest.VariantModel(t, v, uint64(100+i))
			ids := modeltest.IDs(9, m.Config.VocabSize, uint64(i))
			want := modeltest.RefLogProbs(m, nil, ids)
			got := graphLogProbs(t, m, nil, ids, tensor.Float32)
			if d := modeltest.MaxDiff(got, want); d > 1e-4 {
				t.Errorf("float32 graph differs from the reference by %g (> 1e-4)", d)
			}
			got64 := graphLogProbs(t, m, nil, ids, tensor.Float64)
			if d := modeltest.MaxDiff(got64, want); d > 1e-6 { // the graph rounds inv_freq to float32 as transformers does
				t.Errorf("float64 graph differs from the reference by %g (> 1e-6)", d)
			}
		})
	}
}

// TestAdapterForward checks the unmerged adapter in the graph and the merged
// model in the graph against the reference.
func TestAdapterForward(t *testing.T) {
	m, ad := modeltest.AdaptedModel(t)
	c := m.Config
	ids := modeltest.IDs(10, c.VocabSize, 9)
	want := modeltest.RefLogProbs(m, ad, ids)
	if d := modeltest.MaxDiff(want, modeltest.RefLogProbs(m, nil, ids)); d < 1e-3 {
		t.Fatalf("adapter changes the reference output by only %g; the test would not see it", d)
	}
	if d := modeltest.MaxDiff(graphLogProbs(t, m, ad, ids, tensor.Float32), want); d > 1e-4 {
		t.Errorf("graph with adapter differs from the reference by %g", d)
	}
	merged, err := m.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	if d := modeltest.MaxDiff(graphLogProbs(t, merged, nil, ids, tensor.Float32), want); d > 1e-4 {
		t.Errorf("merged model in the graph differs from the reference by %g", d)
	}
}

// TestEngineMatchesGraph compares the engine's inference forward on the
// Host with the graph.
func TestEngineMatchesGraph(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[1], 7)
	ids := modeltest.IDs(20, m.Config.VocabSize, 7)
	if d := modeltest.MaxDiff(engineLogProbs(t, m, ids), graphLogProbs(t, m, nil, ids, tensor.Float32)); d > 1e-4 {
		t.Errorf("engine and Gorgonia graph differ by %g", d)
	}
}

// engineLogProbs runs model/engine's Runner on the Host.
func engineLogProbs(t *testing.T, m *model.Model, ids []int) [][]float64 {
	t.Helper()
	r, err := engine.NewRunner(engine.NewHost(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	logits, err := r.Logits(ids)
	if err != nil {
		t.Fatal(err)
	}
	return modeltest.LogProbs(logits, m.Config.VocabSize)
}
