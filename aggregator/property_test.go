package aggregator

import (
	"context"
	"math"
	"path/filepath"
	"strconv"
	"testing"
	"testing/quick"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

// allStrategies lists every strategy with parameters that work on 7 inputs.
var allStrategies = []struct {
	name   string
	params map[string]float64
}{
	{"fedavg", nil},
	{"fedavgm", map[string]float64{"server_momentum": 0.9, "server_learning_rate": 0.5}},
	{"fedadam", nil},
	{"fedyogi", nil},
	{"fedadagrad", nil},
	{"diloco", nil},
	{"median", nil},
	{"trimmed-mean", nil},
	{"krum", map[string]float64{"num_malicious": 2}},
	{"multi-krum", map[string]float64{"num_malicious": 1}},
	{"bulyan", map[string]float64{"num_malicious": 1}},
}

func TestFedAvgOfIdenticalInputsIsThatInput(t *testing.T) {
	// The same values in four encodings (so four digests): the values are
	// m·2^e with |m| < 256, exact in F16, BF16, F32 and F64.
	dtypes := []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16, safetensors.F64}
	cfg := &quick.Config{MaxCount: 20}
	prop := func(seed uint64, n uint8, w1, w2, w3, w4 uint16) bool {
		k := 1 + int(n%4)
		rng := newRNG(seed)
		w := weights{}
		for _, s := range testLayout {
			v := make([]float32, numel(s.dims))
			for i := range v {
				v[i] = float32(math.Ldexp(float64(rng.IntN(511)-255), rng.IntN(13)-8))
			}
			w[s.name] = v
		}
		dir := t.TempDir()
		var in []Input
		ws := []uint16{w1, w2, w3, w4}
		for i := range k {
			p := writeWeights(t, filepath.Join(dir, strconv.Itoa(i)+".safetensors"), w, dtypes[i], nil)
			in = append(in, Input{Path: p, Weight: float64(1 + int(ws[i])), ContributorID: "t" + strconv.Itoa(i)})
		}
		_, got := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: in})
		for name, v := range w {
			for i := range v {
				if math.Float32bits(got[name][i]) != math.Float32bits(v[i]) {
					t.Logf("seed %d: %s[%d] = %v, want %v", seed, name, i, got[name][i], v[i])
					return false
				}
			}
		}
		return true
	}
	if err := quick.Check(prop, cfg); err != nil {
		t.Fatal(err)
	}
}

// digestOf aggregates and returns the output digest.
func digestOf(t *testing.T, req Request) string {
	t.Helper()
	res, _ := aggregate(t, req)
	return res.Digest
}

type runConfig struct{ threads, chunk int }

// checkDigestInvariance aggregates with every strategy (clipping and noise
// on, so the distance pass runs too) under shuffled input orders and the
// given thread counts and chunk sizes, and requires the digest of the
// Reference backend with the inputs as listed.
func checkDigestInvariance(t *testing.T, trials int, configs []runConfig) {
	f := newFixture(t, 5, 7)
	for _, st := range allStrategies {
		t.Run(st.name, func(t *testing.T) {
			opts := Options{Clip: 4, NoiseMultiplier: 0.5, Seed: 9}
			base := func(in []Input, be kernels.Backend, o Options) Request {
				return Request{Strategy: mustNew(t, st.name, st.params), Inputs: in, Base: f.base, Backend: be, Options: o}
			}
			wantRes, _ := aggregate(t, base(f.inputs(), kernels.Reference{}, opts))
			want := wantRes.Digest
			norms := map[string]uint64{}
			for _, c := range wantRes.Accepted {
				norms[c.Key()] = math.Float64bits(c.Norm)
			}
			in := f.inputs()
			rng := newRNG(11)
			for trial := range trials {
				rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
				for _, c := range configs {
					o := opts
					o.Threads, o.ChunkElems = c.threads, c.chunk
					res, _ := aggregate(t, base(in, kernels.NewCPU(c.threads), o))
					if res.Digest != want {
						t.Fatalf("trial %d, %d threads, chunk %d: digest %s, want %s", trial, c.threads, c.chunk, res.Digest, want)
					}
					for _, a := range res.Accepted {
						if math.Float64bits(a.Norm) != norms[a.Key()] {
							t.Fatalf("trial %d, %d threads, chunk %d: norm of %s is %v, want %v", trial, c.threads, c.chunk, a.Path, a.Norm, math.Float64frombits(norms[a.Key()]))
						}
					}
				}
			}
		})
	}
}

func TestDigestIndependentOfOrderThreadsChunksAndBackend(t *testing.T) {
	checkDigestInvariance(t, 1, []runConfig{{1, 4096}, {2, 8192}, {4, 0}})
}

func TestNoRaceDigestInvarianceGrid(t *testing.T) {
	fedtest.SkipUnderRace(t)
	var grid []runConfig
	for _, threads := range []int{1, 2, 4} {
		for _, chunk := range []int{4096, 8192, 12288, 0} {
			grid = append(grid, runConfig{threads, chunk})
		}
	}
	checkDigestInvariance(t, 3, grid)
}

func TestContributorIDsSetTheOrder(t *testing.T) {
	f := newFixture(t, 6, 5)
	in := f.inputs()
	for i := range in {
		in[i].ContributorID = "trainer-" + strconv.Itoa(len(in)-i)
	}
	want := digestOf(t, Request{Strategy: &FedAvg{}, Inputs: in})
	rev := make([]Input, len(in))
	for i := range in {
		rev[i] = in[len(in)-1-i]
	}
	if got := digestOf(t, Request{Strategy: &FedAvg{}, Inputs: rev}); got != want {
		t.Fatalf("digest changed with input order: %s vs %s", got, want)
	}
	res, _ := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: rev})
	for i := 1; i < len(res.Accepted); i++ {
		if res.Accepted[i-1].ContributorID >= res.Accepted[i].ContributorID {
			t.Fatalf("accepted not in contributor order: %+v", res.Accepted)
		}
	}
	var total float64
	for _, s := range res.Weights {
		total += s
	}
	if math.Abs(total-1) > 1e-12 || len(res.Weights) != len(in) {
		t.Fatalf("weights %v do not sum to 1", res.Weights)
	}
}

func TestRobustStrategiesResistAScaledInput(t *testing.T) {
	for seed := uint64(0); seed < 5; seed++ {
		f := newFixture(t, 100+seed, 7)
		// Plant one input scaled ×1000.
		bad := weights{}
		for name, v := range f.ws[3] {
			x := make([]float32, len(v))
			for i := range v {
				x[i] = v[i] * 1000
			}
			bad[name] = x
		}
		writeWeights(t, f.paths[3], bad, safetensors.F32, nil)
		honest := append(append([]weights{}, f.ws[:3]...), f.ws[4:]...)
		hx := flats(honest)
		for _, name := range []string{"median", "trimmed-mean"} {
			_, got := aggregate(t, Request{Strategy: mustNew(t, name, nil), Inputs: f.inputs()})
			g := got.flat()
			for i := range g {
				lo, hi := math.Inf(1), math.Inf(-1)
				for _, x := range hx {
					lo, hi = math.Min(lo, x[i]), math.Max(hi, x[i])
				}
				if g[i] < lo-1e-6 || g[i] > hi+1e-6 {
					t.Fatalf("seed %d %s: element %d = %v outside the honest range [%v, %v]", seed, name, i, g[i], lo, hi)
				}
			}
		}
		// FedAvg does not resist: check the test can fail.
		_, avg := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: f.inputs()})
		moved := 0.0
		for _, v := range avg.flat() {
			moved = math.Max(moved, math.Abs(v))
		}
		if moved < 50 {
			t.Fatalf("seed %d: fedavg was not moved by the outlier; the test is too weak", seed)
		}
	}
}

func TestKrumNeverPicksAPlantedOutlier(t *testing.T) {
	for seed := uint64(0); seed < 10; seed++ {
		f := newFixture(t, 200+seed, 7)
		rng := newRNG(seed)
		victim := rng.IntN(7)
		// The outlier is near the others in most coordinates but far in a few.
		out := weights{}
		for name, v := range f.ws[victim] {
			x := append([]float32(nil), v...)
			for j := 0; j < 5; j++ {
				x[rng.IntN(len(x))] += float32(10 + 10*rng.Float64())
			}
			out[name] = x
		}
		writeWeights(t, f.paths[victim], out, safetensors.F32, nil)
		u, err := OpenUpdate(f.paths[victim])
		if err != nil {
			t.Fatal(err)
		}
		outDigest, _ := u.Digest()
		u.Close()
		for _, name := range []string{"krum", "multi-krum", "bulyan"} {
			res, _ := aggregate(t, Request{Strategy: mustNew(t, name, map[string]float64{"num_malicious": 1}), Inputs: f.inputs()})
			if s := res.Weights[outDigest]; s != 0 {
				t.Fatalf("seed %d: %s gave the outlier share %v", seed, name, s)
			}
		}
	}
}

func TestClippingAndNoise(t *testing.T) {
	f := newFixture(t, 7, 5)
	xs, w := canonicalOrder(t, f)
	b := f.baseW.flat()
	const clip = 1.5
	// Reference: clip each update u = x − base to norm clip, then FedAvg.
	var clipped [][]float64
	for _, x := range xs {
		var n2 float64
		for i := range x {
			n2 += (x[i] - b[i]) * (x[i] - b[i])
		}
		s := math.Min(1, clip/math.Sqrt(n2))
		c := make([]float64, len(x))
		for i := range x {
			c[i] = b[i] + s*(x[i]-b[i])
		}
		clipped = append(clipped, c)
	}
	want := refFedAvg(clipped, w)
	res, got := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Base: f.base, Options: Options{Clip: clip}})
	assertClose(t, "clipped fedavg", got, want, 1e-6)
	for _, c := range res.Accepted {
		if c.Norm <= clip || c.ClipScale >= 1 {
			t.Fatalf("input %s norm %v not clipped (scale %v)", c.Path, c.Norm, c.ClipScale)
		}
	}
	// Noise: σ = z·C/m, reproducible by seed.
	const z = 2.0
	noisy := func(seed uint64) (*Result, weights) {
		return aggregate(t, Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Base: f.base, Options: Options{Clip: clip, NoiseMultiplier: z, Seed: seed}})
	}
	r1, n1 := noisy(1)
	r2, _ := noisy(1)
	r3, _ := noisy(2)
	if r1.Digest != r2.Digest || r1.Digest == r3.Digest {
		t.Fatalf("noise digests: seed 1 %s and %s, seed 2 %s", r1.Digest, r2.Digest, r3.Digest)
	}
	// Seed 0 (production): a fresh secret key from crypto/rand each time.
	r4, _ := noisy(0)
	r5, _ := noisy(0)
	if r4.Digest == r5.Digest || r4.Digest == r1.Digest {
		t.Fatalf("unseeded noise repeated: %s, %s (seed 1 %s)", r4.Digest, r5.Digest, r1.Digest)
	}
	sigma := z * clip / 5
	if r1.NoiseStdDev != sigma {
		t.Fatalf("NoiseStdDev %v, want %v", r1.NoiseStdDev, sigma)
	}
	g, c := n1.flat(), got.flat()
	var sum, sum2 float64
	for i := range g {
		e := g[i] - c[i]
		sum += e
		sum2 += e * e
	}
	mean := sum / float64(len(g))
	sd := math.Sqrt(sum2/float64(len(g)) - mean*mean)
	if math.Abs(mean) > 5*sigma/math.Sqrt(float64(len(g))) || math.Abs(sd/sigma-1) > 0.05 {
		t.Fatalf("noise mean %v sd %v, want 0 and %v", mean, sd, sigma)
	}
}

func TestDeltaInputs(t *testing.T) {
	f := newFixture(t, 8, 4)
	dir := t.TempDir()
	var in []Input
	for i, w := range f.ws {
		d := weights{}
		for name, v := range w {
			x := make([]float32, len(v))
			for j := range v {
				x[j] = v[j] - f.baseW[name][j]
			}
			d[name] = x
		}
		p := writeWeights(t, filepath.Join(dir, "d"+strconv.Itoa(i)+".safetensors"), d, safetensors.BF16,
			map[string]string{MetaKind: KindDelta, MetaNumSamples: strconv.Itoa(int(f.samples[i]))})
		in = append(in, Input{Path: p})
	}
	// Reference from what the files hold (BF16-rounded deltas).
	var ds [][]float64
	for _, p := range in {
		u, err := OpenUpdate(p.Path)
		if err != nil {
			t.Fatal(err)
		}
		x := weights{}
		dec := NewDecoder(nil)
		for _, ti := range u.Tensors() {
			v := make([]float32, ti.NumElements())
			if err := dec.Read(u, ti.Name, 0, v); err != nil {
				t.Fatal(err)
			}
			x[ti.Name] = v
		}
		u.Close()
		ds = append(ds, x.flat())
	}
	sorted := func() ([][]float64, []float64) {
		// Aggregate orders by digest; FedAvg's value does not depend on order
		// beyond rounding, so the reference sums in file order.
		return ds, f.samples
	}
	xs, w := sorted()
	avg := refFedAvg(xs, w)
	b := f.baseW.flat()
	want := make([]float64, len(b))
	for i := range b {
		want[i] = b[i] + avg[i]
	}
	_, got := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: in, Base: f.base})
	assertClose(t, "fedavg of deltas", got, want, 1e-6)

	// FedAdam on deltas equals FedAdam on base+delta, up to rounding.
	_, a := aggregate(t, Request{Strategy: NewFedAdam(), Inputs: in, Base: f.base})
	ref := &refOpt{name: "fedadam", p: map[string]float64{"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-9}}
	assertClose(t, "fedadam of deltas", a, ref.step(b, want), 1e-5)

	// Deltas need a base.
	_, err := Aggregate(context.Background(), Request{Strategy: &FedAvg{}, Inputs: in, Out: filepath.Join(t.TempDir(), "o")})
	if err == nil {
		t.Fatal("deltas without a base were accepted")
	}
	t.Log(err)
}

func TestInt8Inputs(t *testing.T) {
	f := newFixture(t, 9, 3)
	dir := t.TempDir()
	var in []Input
	var xs [][]float64
	for i, w := range f.ws {
		ts, meta, err := QuantizeTensors(nil, w.tensors(t, safetensors.F32), 100, map[string]string{MetaNumSamples: "3"})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "q"+strconv.Itoa(i)+".safetensors")
		if _, err := safetensors.WriteFile(p, ts, meta); err != nil {
			t.Fatal(err)
		}
		in = append(in, Input{Path: p})
		// Reference dequantization, written independently.
		x := weights{}
		for _, tt := range ts {
			if tt.DType != safetensors.I8 {
				continue
			}
			var sc []float32
			for _, s := range ts {
				if s.Name == tt.Name+ScalesSuffix {
					sc = make([]float32, s.Info().NumElements())
					_ = safetensors.DecodeFloat32(safetensors.F32, sc, s.Data)
				}
			}
			v := make([]float32, len(tt.Data))
			maxErr := 0.0
			for j, b := range tt.Data {
				v[j] = float32(int8(b)) * sc[j/100]
				maxErr = math.Max(maxErr, math.Abs(float64(v[j]-w[tt.Name][j]))/float64(sc[j/100]))
			}
			if maxErr > 0.5001 {
				t.Fatalf("%s: quantization error %v scales", tt.Name, maxErr)
			}
			x[tt.Name] = v
		}
		xs = append(xs, x.flat())
	}
	want := refFedAvg(xs, []float64{1, 1, 1})
	for _, chunk := range []int{4096, 0} {
		_, got := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: in, Options: Options{ChunkElems: chunk}})
		assertClose(t, "fedavg of int8", got, want, 1e-6)
	}
}
