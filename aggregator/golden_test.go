package aggregator

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

const goldenDir = "testdata/golden"

// goldenLayout is the golden inputs' tensors and shapes.
var goldenLayout = map[string][]int{"b": {3}, "w": {4, 5}}

// writeGoldenInputs writes the fixed small input set: a base and seven
// updates in every encoding.
func writeGoldenInputs(t *testing.T) {
	rng := newRNG(42)
	layout := goldenLayout
	gen := func(center map[string][]float32, spread float64) map[string][]float32 {
		out := map[string][]float32{}
		for _, name := range []string{"b", "w"} {
			dims := layout[name]
			v := make([]float32, numel(dims))
			for i := range v {
				c := 0.0
				if center != nil {
					c = float64(center[name][i])
				}
				v[i] = float32(c + spread*rng.NormFloat64())
			}
			out[name] = v
		}
		return out
	}
	tensors := func(w map[string][]float32, dt safetensors.DType) []safetensors.Tensor {
		var ts []safetensors.Tensor
		for _, name := range []string{"b", "w"} {
			tt, err := safetensors.FromFloat32(name, dt, layout[name], w[name])
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, tt)
		}
		return ts
	}
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := gen(nil, 1)
	write := func(name string, ts []safetensors.Tensor, meta map[string]string) {
		if _, err := safetensors.WriteFile(filepath.Join(goldenDir, name), ts, meta); err != nil {
			t.Fatal(err)
		}
	}
	write("base.safetensors", tensors(base, safetensors.F32), nil)
	encodings := []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16, "int8", safetensors.F32, safetensors.F64, safetensors.F32}
	for i, enc := range encodings {
		w := gen(base, 0.1)
		meta := map[string]string{MetaNumSamples: fmt.Sprint(10 * (i + 1))}
		ts := tensors(w, safetensors.F32)
		if enc == "int8" {
			var err error
			if ts, meta, err = QuantizeTensors(kernels.Reference{}, ts, 8, meta); err != nil {
				t.Fatal(err)
			}
		} else {
			ts = tensors(w, enc)
		}
		write(fmt.Sprintf("update%d.safetensors", i), ts, meta)
	}
}

func goldenInputs() []Input {
	var in []Input
	for i := range 7 {
		in = append(in, Input{Path: filepath.Join(goldenDir, fmt.Sprintf("update%d.safetensors", i))})
	}
	return in
}

func TestGoldenDigests(t *testing.T) {
	if *update {
		writeGoldenInputs(t)
	}
	base := filepath.Join(goldenDir, "base.safetensors")
	got := map[string]string{}
	for _, st := range allStrategies {
		res, _ := aggregate(t, Request{Strategy: mustNew(t, st.name, st.params), Inputs: goldenInputs(), Base: base})
		got[st.name] = res.Digest
	}
	res, _ := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: goldenInputs(), Base: base,
		Options: Options{Clip: 0.2, NoiseMultiplier: 1, Seed: 7}})
	got["fedavg+clip+noise"] = res.Digest
	res, _ = aggregate(t, Request{Strategy: &Krum{Byzantine: 1, Multi: true}, Inputs: goldenInputs(), Base: base,
		Options: Options{Clip: 0.2}})
	got["multi-krum+clip"] = res.Digest
	// Two FedAdam rounds through the state file.
	dir := t.TempDir()
	r1, _ := aggregate(t, Request{Strategy: NewFedAdam(), Inputs: goldenInputs(), Base: base,
		Out: filepath.Join(dir, "g1.safetensors"), StateOut: filepath.Join(dir, "s1.safetensors")})
	r2, _ := aggregate(t, Request{Strategy: NewFedAdam(), Inputs: goldenInputs(), Base: r1.Path,
		State: filepath.Join(dir, "s1.safetensors"), Out: filepath.Join(dir, "g2.safetensors"), StateOut: filepath.Join(dir, "s2.safetensors")})
	got["fedadam-round1-state"] = r1.StateDigest
	got["fedadam-round2"] = r2.Digest
	got["fedadam-round2-state"] = r2.StateDigest
	// Two DiLoCo rounds over delta inputs (what pre-training trainers
	// send) through the momentum state.
	deltas := goldenDeltas(t, base)
	d1, _ := aggregate(t, Request{Strategy: NewDiLoCo(), Inputs: deltas, Base: base,
		Out: filepath.Join(dir, "d1.safetensors"), StateOut: filepath.Join(dir, "ds1.safetensors")})
	d2, _ := aggregate(t, Request{Strategy: NewDiLoCo(), Inputs: deltas, Base: d1.Path,
		State: filepath.Join(dir, "ds1.safetensors"), Out: filepath.Join(dir, "d2.safetensors"), StateOut: filepath.Join(dir, "ds2.safetensors")})
	got["diloco-delta-round1-state"] = d1.StateDigest
	got["diloco-delta-round2"] = d2.Digest
	got["diloco-delta-round2-state"] = d2.StateDigest

	path := filepath.Join("testdata", "golden_digests.txt")
	if *update {
		var keys []string
		for k := range got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		b.WriteString("# aggregator golden digests: go test ./aggregator -run TestGoldenDigests -update\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s\n", k, got[k])
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	want := map[string]string{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		want[k] = v
	}
	if len(want) != len(got) {
		t.Errorf("golden file has %d entries, test computes %d", len(want), len(got))
	}
	for k, v := range got {
		if want[k] != v {
			t.Errorf("%s: digest %s, golden %s (rerun with -update if the change is intended)", k, v, want[k])
		}
	}
}
