package gorgoniaref

import (
	"maps"
	"math"
	"slices"
	"testing"

	"gorgonia.org/tensor"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
)

// TestGradientsMatchFiniteDifferences checks Gorgonia's symbolic gradients
// of the whole model — every base weight and both LoRA factors — against
// central finite differences in float64. It guards against the gorgonia
// v0.9.18 gradient bugs worked around in graph.go (InverseSqrt, ByIndices
// along the last axis) and any regression of the ops used.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	for _, tied := range []bool{false, true} {
		name := "untied"
		if tied {
			name = "tied"
		}
		t.Run(name, func(t *testing.T) {
			c := modeltest.TinyConfig()
			c.VocabSize = 11
			c.HiddenSize = 8
			c.IntermediateSize = 12
			c.NumAttentionHeads = 4
			c.NumKeyValueHeads = 2
			c.TieWordEmbeddings = tied
			m, err := model.New(c, 3)
			if err != nil {
				t.Fatal(err)
			}
			modeltest.Randomise(m, 3)
			lc := model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj", "down_proj"}}
			ad, err := model.NewAdapter(c, lc, 5)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range slices.Sorted(maps.Keys(ad.Tensors)) { // non-zero B so A's gradient is not zero
				r := modeltest.RNG(9, n)
				for i := range ad.Tensors[n].Data {
					ad.Tensors[n].Data[i] = float32(r.NormFloat64() * 0.3)
				}
			}
			gr, err := buildGraph(m, graphSpec{B: 2, T: 5, dt: tensor.Float64, full: true, lora: &lc, adapter: ad})
			if err != nil {
				t.Fatal(err)
			}
			defer gr.close()
			batch := [][]int{modeltest.IDs(6, c.VocabSize, 1), modeltest.IDs(6, c.VocabSize, 2)}
			if err := gr.setBatch(batch); err != nil {
				t.Fatal(err)
			}
			lossAt := func() float64 {
				l, err := gr.run()
				if err != nil {
					t.Fatal(err)
				}
				gr.vm.Reset()
				return l
			}
			if _, err := gr.run(); err != nil {
				t.Fatal(err)
			}
			grads := make([][]float64, len(gr.params))
			for i, p := range gr.params {
				g, err := p.Grad()
				if err != nil {
					t.Fatal(err)
				}
				grads[i] = slices.Clone(g.Data().([]float64))
			}
			gr.vm.Reset()
			if err := gr.zeroGrads(); err != nil {
				t.Fatal(err)
			}
			// A second run must give the same gradients (no accumulation across steps).
			if _, err := gr.run(); err != nil {
				t.Fatal(err)
			}
			for i, p := range gr.params {
				g, _ := p.Grad()
				if d := g.Data().([]float64); !slices.Equal(d, grads[i]) {
					t.Errorf("%s: gradient changed between two identical runs: %v vs %v", gr.names[i], d[:3], grads[i][:3])
				}
			}
			gr.vm.Reset()

			const h = 1e-5
			checked := 0
			for i, p := range gr.params {
				w := p.Value().Data().([]float64)
				r := modeltest.RNG(11, gr.names[i])
				for k := 0; k < 4; k++ {
					j := r.IntN(len(w))
					orig := w[j]
					w[j] = orig + h
					lp := lossAt()
					w[j] = orig - h
					lm := lossAt()
					w[j] = orig
					fd := (lp - lm) / (2 * h)
					an := grads[i][j]
					if err := math.Abs(fd - an); err > 1e-6+1e-4*math.Abs(fd) {
						t.Errorf("%s[%d]: gradient %.9g, finite difference %.9g", gr.names[i], j, an, fd)
					}
					checked++
				}
			}
			t.Logf("checked %d coordinates over %d parameter tensors", checked, len(gr.params))
		})
	}
}
