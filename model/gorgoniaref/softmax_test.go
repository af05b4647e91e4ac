package gorgoniaref

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
)

// TestStableSoftMax: rows far above or below the tensor's first element
// (where gorgonia's own SoftMax gives NaN) come out right, in float32 and
// float64.
func TestStableSoftMax(t *testing.T) {
	rows := [][]float64{{0, 0, -1e9}, {200, 0, -1e9}, {-300, -1e9, -301}, {1, 2, 3}}
	n, m := len(rows), len(rows[0])
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		g := G.NewGraph()
		flat := make([]float64, 0, n*m)
		for _, r := range rows {
			flat = append(flat, r...)
		}
		gr := &graph{g: g, dt: dt}
		x := gr.table("x", []int{n, m}, flat)
		p, err := stableSoftMax(x)
		if err != nil {
			t.Fatal(err)
		}
		lp, err := stableLogSoftMax(x)
		if err != nil {
			t.Fatal(err)
		}
		var pv, lpv G.Value
		G.Read(p, &pv)
		G.Read(lp, &lpv)
		vm := G.NewTapeMachine(g)
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		vm.Close()
		at := func(v G.Value, i int) float64 {
			switch d := v.Data().(type) {
			case []float32:
				return float64(d[i])
			case []float64:
				return d[i]
			}
			return math.NaN()
		}
		for i, r := range rows {
			mx := math.Inf(-1)
			for _, v := range r {
				mx = math.Max(mx, v)
			}
			var z float64
			for _, v := range r {
				z += math.Exp(v - mx)
			}
			for j, v := range r {
				wantLP := v - mx - math.Log(z)
				if wantLP < -1e6 { // a masked entry: only its probability matters
					wantLP = math.Inf(-1)
				}
				gotP, gotLP := at(pv, i*m+j), at(lpv, i*m+j)
				if math.Abs(gotP-math.Exp(wantLP)) > 1e-6 || (!math.IsInf(wantLP, -1) && math.Abs(gotLP-wantLP) > 1e-5) {
					t.Errorf("%v row %v [%d]: softmax %g, log-softmax %g; want %g, %g", dt, r, j, gotP, gotLP, math.Exp(wantLP), wantLP)
				}
			}
		}
	}
}

// TestGraphForwardLargeLogits: a model whose output rows differ by
// thousands of nats (gorgonia's LogSoftMax turns such rows into NaN or
// Inf, in float32 and float64) still agrees with the reference.
func TestGraphForwardLargeLogits(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[0], 31)
	for i := range m.Tensors[model.LMHeadName].Data {
		m.Tensors[model.LMHeadName].Data[i] *= 3000
	}
	ids := modeltest.IDs(9, m.Config.VocabSize, 31)
	want := modeltest.RefLogProbs(m, nil, ids)
	var spread float64
	for i := range want {
		spread = math.Max(spread, math.Abs(want[i][0]-want[0][0]))
	}
	if spread < 1000 {
		t.Fatalf("log-probabilities spread only %g across rows; the test would not exercise the bug", spread)
	}
	for _, c := range []struct {
		dt  tensor.Dtype
		tol float64
	}{{tensor.Float32, 1e-5}, {tensor.Float64, 1e-7}} {
		got := graphLogProbs(t, m, nil, ids, c.dt)
		if d := modeltest.MaxDiff(got, want); !(d <= c.tol*spread) {
			t.Errorf("%v graph differs from the reference by %g with logits spread over %g", c.dt, d, spread)
		}
	}
}
