package aggregator

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/model/safetensors"
)

func flats(ws []weights) [][]float64 {
	xs := make([][]float64, len(ws))
	for i, w := range ws {
		xs[i] = w.flat()
	}
	return xs
}

// canonicalOrder returns the fixture's inputs reordered as Aggregate
// orders them (by digest), with their weights.
func canonicalOrder(t *testing.T, f *fixture) ([][]float64, []float64) {
	t.Helper()
	type item struct {
		d string
		x []float64
		w float64
	}
	var items []item
	for i, p := range f.paths {
		u, err := OpenUpdate(p)
		if err != nil {
			t.Fatal(err)
		}
		d, err := u.Digest()
		u.Close()
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item{d, f.ws[i].flat(), f.samples[i]})
	}
	for i := range items {
		for j := i + 1; j < len(items); j++ {
			if items[j].d < items[i].d {
				items[i], items[j] = items[j], items[i]
			}
		}
	}
	xs := make([][]float64, len(items))
	ws := make([]float64, len(items))
	for i, it := range items {
		xs[i], ws[i] = it.x, it.w
	}
	return xs, ws
}

func TestStrategiesMatchReference(t *testing.T) {
	f := newFixture(t, 1, 7)
	xs, w := canonicalOrder(t, f)
	uniform := make([]float64, len(xs))
	for i := range uniform {
		uniform[i] = 1
	}
	cases := []struct {
		name   string
		params map[string]float64
		want   []float64
	}{
		{"fedavg", nil, refFedAvg(xs, w)},
		{"median", nil, refMedian(xs)},
		{"trimmed-mean", nil, refTrimmed(xs, 0.2)},
		{"trimmed-mean", map[string]float64{"beta": 0.3}, refTrimmed(xs, 0.3)},
		{"krum", map[string]float64{"num_malicious": 2}, xs[refKrum(xs, 2)]},
		{"multi-krum", map[string]float64{"num_malicious": 1}, refMultiKrum(xs, w, 1, 6)},
		{"multi-krum", map[string]float64{"num_malicious": 2, "to_keep": 3}, refMultiKrum(xs, w, 2, 3)},
		{"bulyan", map[string]float64{"num_malicious": 1}, refBulyan(xs, 1)},
	}
	for _, be := range backends() {
		for _, tc := range cases {
			t.Run(be.Name()+"/"+tc.name, func(t *testing.T) {
				_, got := aggregate(t, Request{Strategy: mustNew(t, tc.name, tc.params), Inputs: f.inputs(), Backend: be, Options: Options{ChunkElems: 4096}})
				assertClose(t, tc.name, got, tc.want, 1e-6)
			})
		}
	}
}

func TestKrumPicksAnInputExactly(t *testing.T) {
	f := newFixture(t, 2, 6)
	xs, _ := canonicalOrder(t, f)
	_, got := aggregate(t, Request{Strategy: mustNew(t, "krum", map[string]float64{"num_malicious": 1}), Inputs: f.inputs()})
	want := xs[refKrum(xs, 1)]
	for i, v := range got.flat() {
		if v != want[i] {
			t.Fatalf("krum result differs from the picked input at %d: %v vs %v", i, v, want[i])
		}
	}
}

// refOpt runs the server optimizers of Flower's fedavgm, fedadam, fedyogi
// and fedadagrad in float64 over whole vectors.
type refOpt struct {
	name      string
	p         map[string]float64
	m, v, mom []float64
	round     int
}

func (o *refOpt) step(global, avg []float64) []float64 {
	n := len(global)
	if o.m == nil {
		o.m, o.v, o.mom = make([]float64, n), make([]float64, n), make([]float64, n)
	}
	out := make([]float64, n)
	o.round++
	for i := range global {
		delta := avg[i] - global[i]
		switch o.name {
		case "fedavgm":
			g := global[i] - avg[i]
			if o.round == 1 {
				o.mom[i] = g
			} else {
				o.mom[i] = o.p["server_momentum"]*o.mom[i] + g
			}
			out[i] = global[i] - o.p["server_learning_rate"]*o.mom[i]
			continue
		case "diloco":
			// torch.optim.SGD(lr, momentum=μ, nesterov=True, dampening=0):
			// buf = g in the first step, then buf = μ·buf + g; the step
			// is g + μ·buf.
			g := global[i] - avg[i]
			mu := o.p["momentum"]
			if o.round == 1 {
				o.mom[i] = g
			} else {
				o.mom[i] = mu*o.mom[i] + g
			}
			out[i] = global[i] - o.p["learning_rate"]*(g+mu*o.mom[i])
			continue
		}
		b1, b2, eta, tau := o.p["beta_1"], o.p["beta_2"], o.p["eta"], o.p["tau"]
		o.m[i] = b1*o.m[i] + (1-b1)*delta
		d2 := delta * delta
		switch o.name {
		case "fedadam":
			o.v[i] = b2*o.v[i] + (1-b2)*d2
		case "fedyogi":
			s := 0.0
			if o.v[i]-d2 > 0 {
				s = 1
			} else if o.v[i]-d2 < 0 {
				s = -1
			}
			o.v[i] = o.v[i] - (1-b2)*d2*s
		case "fedadagrad":
			o.v[i] = o.v[i] + d2
		}
		out[i] = global[i] + eta*o.m[i]/(math.Sqrt(o.v[i])+tau)
	}
	return out
}

func TestServerOptimizersOverRounds(t *testing.T) {
	cases := []struct {
		name   string
		params map[string]float64
		ref    map[string]float64
	}{
		{"fedavgm", map[string]float64{"server_momentum": 0.9, "server_learning_rate": 0.7},
			map[string]float64{"server_momentum": 0.9, "server_learning_rate": 0.7}},
		{"fedadam", nil, map[string]float64{"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-9}},
		{"fedyogi", nil, map[string]float64{"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}},
		{"fedadagrad", map[string]float64{"eta": 0.05}, map[string]float64{"eta": 0.05, "beta_1": 0, "tau": 1e-9}},
		{"fedadam", map[string]float64{"beta_1": 0.5, "tau": 1e-3}, map[string]float64{"eta": 0.1, "beta_1": 0.5, "beta_2": 0.99, "tau": 1e-3}},
		{"diloco", nil, map[string]float64{"learning_rate": 0.7, "momentum": 0.9}},
		{"diloco", map[string]float64{"learning_rate": 1.3, "momentum": 0.5}, map[string]float64{"learning_rate": 1.3, "momentum": 0.5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			rng := newRNG(3)
			global := randomWeights(rng, nil, 1)
			globalPath := writeWeights(t, filepath.Join(dir, "g0.safetensors"), global, safetensors.F32, nil)
			ref := &refOpt{name: tc.name, p: tc.ref}
			state := ""
			for round := 1; round <= 3; round++ {
				var in []Input
				var xs [][]float64
				var ws []float64
				for k := range 4 {
					w := randomWeights(rng, global, 0.05)
					p := writeWeights(t, filepath.Join(dir, "r"+string(rune('0'+round))+"in"+string(rune('a'+k))+".safetensors"), w, safetensors.F32, nil)
					in = append(in, Input{Path: p, Weight: float64(k + 1)})
					xs = append(xs, w.flat())
					ws = append(ws, float64(k+1))
				}
				out := filepath.Join(dir, "g"+string(rune('0'+round))+".safetensors")
				stateOut := filepath.Join(dir, "s"+string(rune('0'+round))+".safetensors")
				res, got := aggregate(t, Request{Strategy: mustNew(t, tc.name, tc.params), Inputs: in, Base: globalPath, State: state, Out: out, StateOut: stateOut})
				if res.StateDigest == "" {
					t.Fatal("no state digest")
				}
				sf, err := safetensors.Open(stateOut)
				if err != nil {
					t.Fatal(err)
				}
				if d, _ := sf.Digest(); d != res.StateDigest {
					t.Fatalf("state digest %s, file digest %s", res.StateDigest, d)
				}
				sf.Close()
				// The reference steps from the global our previous round wrote.
				assertClose(t, tc.name, got, ref.step(global.flat(), refFedAvg(xs, ws)), 2e-5)
				global, globalPath, state = got, out, stateOut
			}
		})
	}
}

func TestNewRejectsBadParams(t *testing.T) {
	cases := []struct {
		name   string
		params map[string]float64
		want   error
	}{
		{"fedprox", nil, ErrUnknownStrategy},
		{"fedavg", map[string]float64{"eta": 1}, ErrBadParams},
		{"fedadam", map[string]float64{"beta_1": 1}, ErrBadParams},
		{"fedadam", map[string]float64{"tau": 0}, ErrBadParams},
		{"fedadagrad", map[string]float64{"beta_2": 0.5}, ErrBadParams},
		{"trimmed-mean", map[string]float64{"beta": 0.5}, ErrBadParams},
		{"krum", map[string]float64{"num_malicious": 1.5}, ErrBadParams},
		{"krum", map[string]float64{"to_keep": 2}, ErrBadParams},
		{"bulyan", map[string]float64{"num_malicious": -1}, ErrBadParams},
		{"fedavgm", map[string]float64{"server_momentum": math.NaN()}, ErrBadParams},
		{"diloco", map[string]float64{"learning_rate": 0}, ErrBadParams},
		{"diloco", map[string]float64{"learning_rate": -0.7}, ErrBadParams},
		{"diloco", map[string]float64{"learning_rate": 1e6}, ErrBadParams},
		{"diloco", map[string]float64{"momentum": 1}, ErrBadParams},
		{"diloco", map[string]float64{"momentum": -0.1}, ErrBadParams},
		{"diloco", map[string]float64{"momentum": math.Inf(1)}, ErrBadParams},
		{"diloco", map[string]float64{"server_momentum": 0.9}, ErrBadParams},
	}
	for _, tc := range cases {
		if _, err := New(tc.name, tc.params); !errors.Is(err, tc.want) {
			t.Errorf("New(%q, %v) = %v, want %v", tc.name, tc.params, err, tc.want)
		}
	}
	for _, name := range Names() {
		s, err := New(name, nil)
		if err != nil || s.Name() != name {
			t.Errorf("New(%q) = %v, %v", name, s, err)
		}
	}
}

func TestStrategyNeedsEnoughInputs(t *testing.T) {
	f := newFixture(t, 4, 4)
	cases := []struct {
		name   string
		params map[string]float64
	}{
		{"krum", map[string]float64{"num_malicious": 1}},                     // needs > 4
		{"multi-krum", map[string]float64{"num_malicious": 0, "to_keep": 5}}, // keeps more than n
		{"bulyan", map[string]float64{"num_malicious": 1}},                   // needs >= 7
	}
	for _, tc := range cases {
		dir := t.TempDir()
		_, err := Aggregate(context.Background(), Request{Strategy: mustNew(t, tc.name, tc.params), Inputs: f.inputs(), Out: filepath.Join(dir, "out.safetensors")})
		if !errors.Is(err, ErrBadParams) {
			t.Errorf("%s %v on 4 inputs: err = %v, want ErrBadParams", tc.name, tc.params, err)
		}
		assertEmptyDir(t, dir)
		t.Logf("%s: %v", tc.name, err)
	}
}

// Bulyan splits a chunk into spans that the worker pool's participants
// share: a chunk of many spans gives the reference's result too.
func TestBulyanSpansMatchReference(t *testing.T) {
	f := newFixture(t, 1, 7)
	xs, _ := canonicalOrder(t, f)
	if len(xs[0]) <= 2*bulyanSpan {
		t.Fatalf("the fixture has %d values: too few for more than two spans of %d", len(xs[0]), bulyanSpan)
	}
	_, got := aggregate(t, Request{Strategy: mustNew(t, "bulyan", map[string]float64{"num_malicious": 1}), Inputs: f.inputs(),
		Options: Options{ChunkElems: len(xs[0])}})
	assertClose(t, "bulyan", got, refBulyan(xs, 1), 1e-6)
}
