package aggregator

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/quick"

	"github.com/fedtune/fedtune/model/safetensors"
)

// goldenDeltas writes the F32 golden updates as deltas to base (what a
// pre-training trainer sends) and returns them as inputs.
func goldenDeltas(t *testing.T, base string) []Input {
	t.Helper()
	b := readWeights(t, base)
	dir := t.TempDir()
	var in []Input
	for _, i := range []int{0, 4, 6} {
		w := readWeights(t, filepath.Join(goldenDir, "update"+strconv.Itoa(i)+".safetensors"))
		for name, v := range w {
			for k := range v {
				v[k] -= b[name][k]
			}
		}
		var ts []safetensors.Tensor
		for _, name := range []string{"b", "w"} {
			tt, err := safetensors.FromFloat32(name, safetensors.F32, goldenLayout[name], w[name])
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, tt)
		}
		p := filepath.Join(dir, "delta"+strconv.Itoa(i)+".safetensors")
		if _, err := safetensors.WriteFile(p, ts, map[string]string{MetaKind: KindDelta, MetaNumSamples: strconv.Itoa(10 * (i + 1))}); err != nil {
			t.Fatal(err)
		}
		in = append(in, Input{Path: p})
	}
	return in
}

// deltaFixture writes n random deltas (fedtune.kind=delta) beside f's base.
func deltaFixture(t *testing.T, f *fixture) []Input {
	t.Helper()
	in := f.inputs()
	for i, w := range f.ws {
		d := weights{}
		for name, v := range w {
			x := make([]float32, len(v))
			for k := range v {
				x[k] = v[k] - f.baseW[name][k]
			}
			d[name] = x
		}
		in[i].Path = writeWeights(t, filepath.Join(f.dir, "delta"+strconv.Itoa(i)+".safetensors"), d, safetensors.F32,
			map[string]string{MetaKind: KindDelta})
	}
	return in
}

// With learning_rate 1 and momentum 0 the outer step is plain averaging:
// DiLoCo gives FedAvg's bits, for full weights and for deltas.
func TestDiLoCoUnitLRNoMomentumIsFedAvg(t *testing.T) {
	prop := func(seed uint64, n uint8) bool {
		f := newFixture(t, seed, 1+int(n%6))
		unit := mustNew(t, "diloco", map[string]float64{"learning_rate": 1, "momentum": 0})
		for _, in := range [][]Input{f.inputs(), deltaFixture(t, f)} {
			want := digestOf(t, Request{Strategy: &FedAvg{}, Inputs: in, Base: f.base})
			if got := digestOf(t, Request{Strategy: unit, Inputs: in, Base: f.base}); got != want {
				t.Logf("seed %d: diloco(1, 0) %s, fedavg %s", seed, got, want)
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 15}); err != nil {
		t.Fatal(err)
	}
}

// Step itself, with η = 1 and μ = 0, gives what the driver writes for
// FedAvg over deltas (base + combined delta, rounded once), bit for bit.
func TestDiLoCoStepUnitLRIsBasePlusDelta(t *testing.T) {
	s := &DiLoCo{LR: 1}
	prop := func(g, d []float32) bool {
		n := min(len(g), len(d))
		dst := make([]float32, n)
		s.Step(dst, g[:n], d[:n], nil)
		for i := range dst {
			want := float32(float64(g[i]) + float64(d[i]))
			if math.Float32bits(dst[i]) != math.Float32bits(want) && !(math.IsNaN(float64(want)) && math.IsNaN(float64(dst[i]))) {
				t.Logf("global %v + delta %v = %v, want %v", g[i], d[i], dst[i], want)
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, nil); err != nil {
		t.Fatal(err)
	}
}

// A worked example of the outer Nesterov step, by hand: η = 0.5, μ = 0.9,
// global 1, the averaged delta −0.25 then −0.5 (outer gradients 0.25, 0.5).
//
//	round 1: v = 0.25;              step = 0.25 + 0.9·0.25 = 0.475;  global = 1 − 0.2375 = 0.7625
//	round 2: v = 0.9·0.25 + 0.5 = 0.725; step = 0.5 + 0.9·0.725 = 1.1525; global = 0.7625 − 0.57625 = 0.18625
func TestDiLoCoStepByHand(t *testing.T) {
	s := &DiLoCo{LR: 0.5, Momentum: 0.9}
	v := []float32{0}
	dst := []float32{0}
	s.Step(dst, []float32{1}, []float32{-0.25}, [][]float32{v})
	if math.Abs(float64(v[0])-0.25) > 1e-7 || math.Abs(float64(dst[0])-0.7625) > 1e-6 {
		t.Fatalf("round 1: v %v global %v, want 0.25 and 0.7625", v[0], dst[0])
	}
	s.Step(dst, []float32{dst[0]}, []float32{-0.5}, [][]float32{v})
	if math.Abs(float64(v[0])-0.725) > 1e-6 || math.Abs(float64(dst[0])-0.18625) > 1e-6 {
		t.Fatalf("round 2: v %v global %v, want 0.725 and 0.18625", v[0], dst[0])
	}
}

func TestDiLoCoStateSlots(t *testing.T) {
	if got := NewDiLoCo().StateSlots(); len(got) != 1 || got[0] != "momentum" {
		t.Fatalf("slots %v, want [momentum]", got)
	}
	if s := (&DiLoCo{LR: 0.7}); s.StateSlots() != nil || !s.Optimizes() {
		t.Fatalf("no momentum: slots %v, optimizes %v; want none and true", s.StateSlots(), s.Optimizes())
	}
	if s := (&DiLoCo{LR: 1}); s.Optimizes() {
		t.Fatal("learning_rate 1, momentum 0 must not step")
	}
}

// An update that names the model it was trained from (fedtune.base) is
// rejected by an aggregation of another base, and only then.
func TestUpdateTrainedFromAnotherBase(t *testing.T) {
	f := newFixture(t, 21, 3)
	in := deltaFixture(t, f)
	baseDigest := digestOfFile(t, f.base)
	other := strings.Repeat("0", 64)
	// Trainer 1 says it started from another model; the others from the base.
	for i := range in {
		b := baseDigest
		if i == 1 {
			b = other
		}
		w := readWeights(t, in[i].Path)
		writeWeights(t, in[i].Path, w, safetensors.F32, map[string]string{MetaKind: KindDelta, MetaBase: b})
	}
	res, _ := aggregate(t, Request{Strategy: NewDiLoCo(), Inputs: in, Base: f.base, BaseDigest: baseDigest})
	if len(res.Rejected) != 1 || res.Rejected[0].Input != 1 {
		t.Fatalf("rejected %+v, want input 1 alone", res.Rejected)
	}
	want := "trained from model " + other + " (__metadata__ fedtune.base), but the round's base is " + baseDigest
	if r := res.Rejected[0].Reason(); !strings.Contains(r, want) || !strings.Contains(r, in[1].Path) {
		t.Fatalf("reason %q, want the file and %q", r, want)
	}
	if !errors.Is(res.Rejected[0].Err, ErrInvalidUpdate) {
		t.Fatalf("reason does not wrap ErrInvalidUpdate: %v", res.Rejected[0].Err)
	}
	// Strict: the aggregation fails and writes nothing.
	dir := t.TempDir()
	if _, err := Aggregate(context.Background(), Request{Strategy: NewDiLoCo(), Inputs: in, Base: f.base, BaseDigest: baseDigest,
		Out: filepath.Join(dir, "out.safetensors"), StateOut: filepath.Join(dir, "state.safetensors"), Options: Options{Strict: true}}); err == nil {
		t.Fatal("strict aggregation accepted an update from another base")
	}
	assertEmptyDir(t, dir)
	// Without the base's digest nothing can be compared: all accepted.
	res, _ = aggregate(t, Request{Strategy: NewDiLoCo(), Inputs: in, Base: f.base})
	if len(res.Rejected) != 0 {
		t.Fatalf("no base digest: rejected %+v", res.Rejected)
	}
	// A fedtune.base that is not a digest is a malformed update.
	writeWeights(t, in[0].Path, readWeights(t, in[0].Path), safetensors.F32, map[string]string{MetaKind: KindDelta, MetaBase: "base-of-round-3"})
	if _, err := OpenUpdate(in[0].Path); err == nil || !strings.Contains(err.Error(), `__metadata__ fedtune.base is "base-of-round-3", want a weight digest`) {
		t.Fatalf("bad fedtune.base: %v", err)
	}
}

func digestOfFile(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256Hex(raw)
}
