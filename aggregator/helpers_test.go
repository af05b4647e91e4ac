package aggregator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

// shape is one tensor of the test layout.
type shape struct {
	name string
	dims []int
}

// testLayout has a tensor longer than one small chunk (4096) and not a
// multiple of it, a small one and a 3-D one.
var testLayout = []shape{
	{"layers.0.mlp.weight", []int{3, 3001}},
	{"layers.0.norm", []int{10}},
	{"lm_head", []int{2, 3, 700}},
}

// weights maps tensor names to values.
type weights map[string][]float32

func numel(dims []int) int {
	n := 1
	for _, d := range dims {
		n *= d
	}
	return n
}

func randomWeights(rng *rand.Rand, center weights, spread float64) weights {
	w := weights{}
	for _, s := range testLayout {
		v := make([]float32, numel(s.dims))
		for i := range v {
			c := 0.0
			if center != nil {
				c = float64(center[s.name][i])
			}
			v[i] = float32(c + spread*rng.NormFloat64())
		}
		w[s.name] = v
	}
	return w
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

func dimsOf(name string) []int {
	for _, s := range testLayout {
		if s.name == name {
			return s.dims
		}
	}
	panic(name)
}

func (w weights) tensors(t testing.TB, dt safetensors.DType) []safetensors.Tensor {
	t.Helper()
	var ts []safetensors.Tensor
	for name, v := range w {
		tt, err := safetensors.FromFloat32(name, dt, dimsOf(name), v)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tt)
	}
	return ts
}

func writeWeights(t testing.TB, path string, w weights, dt safetensors.DType, meta map[string]string) string {
	t.Helper()
	if _, err := safetensors.WriteFile(path, w.tensors(t, dt), meta); err != nil {
		t.Fatal(err)
	}
	return path
}

func readWeights(t testing.TB, path string) weights {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := weights{}
	for _, ti := range f.Tensors() {
		if ti.DType != safetensors.F32 {
			t.Fatalf("%s: tensor %s is %s, want F32", path, ti.Name, ti.DType)
		}
		v, err := f.Float32s(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		w[ti.Name] = v
	}
	return w
}

// flat concatenates the tensors in name order, in float64.
func (w weights) flat() []float64 {
	names := make([]string, 0, len(w))
	for n := range w {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []float64
	for _, n := range names {
		for _, v := range w[n] {
			out = append(out, float64(v))
		}
	}
	return out
}

// fixture is a set of inputs written to a directory.
type fixture struct {
	dir     string
	base    string
	baseW   weights
	paths   []string
	ws      []weights
	samples []float64
}

// newFixture writes n random inputs around a random base.
func newFixture(t testing.TB, seed uint64, n int) *fixture {
	t.Helper()
	rng := newRNG(seed)
	f := &fixture{dir: t.TempDir()}
	f.baseW = randomWeights(rng, nil, 1)
	f.base = writeWeights(t, filepath.Join(f.dir, "base.safetensors"), f.baseW, safetensors.F32, nil)
	for i := range n {
		w := randomWeights(rng, f.baseW, 0.1)
		p := filepath.Join(f.dir, "in"+string(rune('a'+i))+".safetensors")
		f.paths = append(f.paths, writeWeights(t, p, w, safetensors.F32, nil))
		f.ws = append(f.ws, w)
		f.samples = append(f.samples, float64(1+rng.IntN(100)))
	}
	return f
}

func (f *fixture) inputs() []Input {
	in := make([]Input, len(f.paths))
	for i, p := range f.paths {
		in[i] = Input{Path: p, Weight: f.samples[i]}
	}
	return in
}

func mustNew(t testing.TB, name string, params map[string]float64) Strategy {
	t.Helper()
	s, err := New(name, params)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// aggregate runs req, writing to a fresh file, and returns the result and
// the output weights.
func aggregate(t testing.TB, req Request) (*Result, weights) {
	t.Helper()
	if req.Out == "" {
		req.Out = filepath.Join(t.TempDir(), "out.safetensors")
	}
	res, err := Aggregate(context.Background(), req)
	if err != nil {
		t.Fatalf("Aggregate: %v", err)
	}
	got := readWeights(t, req.Out)
	raw, err := os.ReadFile(req.Out)
	if err != nil {
		t.Fatal(err)
	}
	if d := sha256Hex(raw); d != res.Digest {
		t.Fatalf("digest %s, but the file hashes to %s", res.Digest, d)
	}
	return res, got
}

func assertClose(t testing.TB, what string, got weights, want []float64, rel float64) {
	t.Helper()
	g := got.flat()
	if len(g) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(g), len(want))
	}
	for i := range g {
		if diff := math.Abs(g[i] - want[i]); diff > rel*(1+math.Abs(want[i])) || math.IsNaN(g[i]) {
			t.Fatalf("%s: element %d = %v, want %v (diff %g)", what, i, g[i], want[i], diff)
		}
	}
}

func backends() []kernels.Backend {
	return []kernels.Backend{kernels.Reference{}, kernels.NewCPU(1), kernels.NewCPU(4)}
}

// --- plain float64 references, written from the definitions ---

func refFedAvg(xs [][]float64, w []float64) []float64 {
	out := make([]float64, len(xs[0]))
	var total float64
	for k := range xs {
		total += w[k]
		for i, v := range xs[k] {
			out[i] += w[k] * v
		}
	}
	for i := range out {
		out[i] /= total
	}
	return out
}

func column(xs [][]float64, i int) []float64 {
	c := make([]float64, len(xs))
	for k := range xs {
		c[k] = xs[k][i]
	}
	return c
}

func refMedian(xs [][]float64) []float64 {
	out := make([]float64, len(xs[0]))
	for i := range out {
		c := column(xs, i)
		slices.Sort(c)
		n := len(c)
		if n%2 == 1 {
			out[i] = c[n/2]
		} else {
			out[i] = (c[n/2-1] + c[n/2]) / 2
		}
	}
	return out
}

func refTrimmed(xs [][]float64, beta float64) []float64 {
	n := len(xs)
	k := int(beta * float64(n))
	out := make([]float64, len(xs[0]))
	for i := range out {
		c := column(xs, i)
		slices.Sort(c)
		var s float64
		for _, v := range c[k : n-k] {
			s += v
		}
		out[i] = s / float64(n-2*k)
	}
	return out
}

func sqdist(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += (a[i] - b[i]) * (a[i] - b[i])
	}
	return s
}

// refKrumScores scores each candidate by the sum of squared distances to
// its max(1, |cand|−f−2) nearest other candidates.
func refKrumScores(xs [][]float64, cand []int, f int) []float64 {
	nc := max(1, len(cand)-f-2)
	scores := make([]float64, len(cand))
	for a, i := range cand {
		var ds []float64
		for _, j := range cand {
			if j != i {
				ds = append(ds, sqdist(xs[i], xs[j]))
			}
		}
		slices.Sort(ds)
		for _, v := range ds[:nc] {
			scores[a] += v
		}
	}
	return scores
}

func argmin(v []float64) int {
	best := 0
	for i := range v {
		if v[i] < v[best] {
			best = i
		}
	}
	return best
}

func refKrum(xs [][]float64, f int) int {
	cand := make([]int, len(xs))
	for i := range cand {
		cand[i] = i
	}
	return argmin(refKrumScores(xs, cand, f))
}

func refMultiKrum(xs [][]float64, w []float64, f, keep int) []float64 {
	cand := make([]int, len(xs))
	for i := range cand {
		cand[i] = i
	}
	scores := refKrumScores(xs, cand, f)
	sort.SliceStable(cand, func(a, b int) bool { return scores[cand[a]] < scores[cand[b]] })
	var kx [][]float64
	var kw []float64
	for _, i := range cand[:keep] {
		kx = append(kx, xs[i])
		kw = append(kw, w[i])
	}
	return refFedAvg(kx, kw)
}

func refBulyan(xs [][]float64, f int) []float64 {
	n := len(xs)
	theta, beta := n-2*f, n-4*f
	cand := make([]int, n)
	for i := range cand {
		cand[i] = i
	}
	var sel [][]float64
	for range theta {
		b := argmin(refKrumScores(xs, cand, f))
		sel = append(sel, xs[cand[b]])
		cand = slices.Delete(cand, b, b+1)
	}
	med := refMedian(sel)
	out := make([]float64, len(xs[0]))
	for i := range out {
		c := column(sel, i)
		sort.SliceStable(c, func(a, b int) bool { return math.Abs(c[a]-med[i]) < math.Abs(c[b]-med[i]) })
		var s float64
		for _, v := range c[:beta] {
			s += v
		}
		out[i] = s / float64(beta)
	}
	return out
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func assertEmptyDir(t testing.TB, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("%s: unexpected file %s left behind", dir, e.Name())
	}
}
