package aggregator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestInspectDigestMatchesFile checks the one-pass digest against
// safetensors' own (*File).Digest on inputs in every encoding, including
// int8 with scales and files with metadata, mapped and read through.
func TestInspectDigestMatchesFile(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		setMapInputs(t, mapped)
		for _, chunk := range []int{0, kernels.ReduceBlock} {
			res, _ := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: goldenInputs(),
				Base: filepath.Join(goldenDir, "base.safetensors"), Options: Options{ChunkElems: chunk, MaxNorm: 1e9}})
			if len(res.Accepted) != 7 {
				t.Fatalf("accepted %d of 7", len(res.Accepted))
			}
			for _, c := range res.Accepted {
				f, err := safetensors.Open(c.Path)
				if err != nil {
					t.Fatal(err)
				}
				want, err := f.Digest()
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				if c.Digest != want {
					t.Errorf("mapped=%v chunk %d: %s: digest %s, (*File).Digest %s", mapped, chunk, c.Path, c.Digest, want)
				}
			}
		}
	}
}

// TestMappedAndReadPathsAgree runs every strategy, with and without
// clipping and a norm bound, on multi-chunk inputs in several encodings,
// once with the inputs memory-mapped and once read through: the outputs,
// norms and digests must be the same bits.
func TestMappedAndReadPathsAgree(t *testing.T) {
	dir := t.TempDir()
	rng := newRNG(99)
	const n = 3*kernels.ReduceBlock + 5
	base := make([]float32, n)
	for i := range base {
		base[i] = float32(rng.NormFloat64())
	}
	write := func(name string, dt safetensors.DType, v []float32) string {
		tt, err := safetensors.FromFloat32("w", dt, []int{n}, v)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if _, err := safetensors.WriteFile(p, []safetensors.Tensor{tt}, nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	basePath := write("base.safetensors", safetensors.F32, base)
	var in []Input
	for k, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F32, safetensors.F16, safetensors.F32, safetensors.F64, safetensors.F32} {
		v := make([]float32, n)
		for i := range v {
			v[i] = base[i] + float32(0.1*float64(k+1)*rng.NormFloat64())
		}
		in = append(in, Input{Path: write(fmt.Sprintf("u%d.safetensors", k), dt, v), Weight: float64(k + 1)})
	}
	run := func(mapped bool, st Strategy, o Options) *Result {
		setMapInputs(t, mapped)
		res, _ := aggregate(t, Request{Strategy: st, Inputs: in, Base: basePath, Options: o})
		return res
	}
	for _, st := range allStrategies {
		for _, o := range []Options{{ChunkElems: kernels.ReduceBlock}, {Clip: 2, MaxNorm: 1e6}, {Clip: 3, ChunkElems: 2 * kernels.ReduceBlock, Threads: 1}} {
			a := run(true, mustNew(t, st.name, st.params), o)
			b := run(false, mustNew(t, st.name, st.params), o)
			if a.Digest != b.Digest {
				t.Errorf("%s %+v: mapped %s, read %s", st.name, o, a.Digest, b.Digest)
			}
			for i := range a.Accepted {
				if a.Accepted[i].Norm != b.Accepted[i].Norm || a.Accepted[i].Digest != b.Accepted[i].Digest {
					t.Errorf("%s %+v: input %d: mapped %+v, read %+v", st.name, o, i, a.Accepted[i], b.Accepted[i])
				}
			}
		}
	}
}

func setMapInputs(t *testing.T, on bool) {
	old := mapInputs
	mapInputs = on
	t.Cleanup(func() { mapInputs = old })
}

// TestTruncatedWhileMapped truncates a mapped input under the inspection
// pass: the fault must become an error naming the file, not a crash.
func TestTruncatedWhileMapped(t *testing.T) {
	if !mapInputs {
		t.Skip("inputs are not mapped")
	}
	f := newFixture(t, 3, 1)
	d, err := newDriver(Request{Strategy: &FedAvg{}, Inputs: f.inputs()})
	if err != nil {
		t.Fatal(err)
	}
	u, err := OpenUpdate(f.paths[0])
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if !u.f.Mapped() {
		t.Skip("this platform does not map files")
	}
	if err := os.Truncate(f.paths[0], 64); err != nil {
		t.Fatal(err)
	}
	ins := &inspector{d: d}
	_, err = ins.inspect(context.Background(), 0, u)
	var ue *UpdateError
	if !errors.As(err, &ue) || ue.File != f.paths[0] || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("inspect of a truncated mapped file: %v", err)
	}
}

type failAfter struct{ left int }

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.left {
		return 0, errors.New("disk full")
	}
	f.left -= len(p)
	return len(p), nil
}

// TestBGWriterError checks that a failed background write surfaces, stops
// later writes early, and never blocks.
func TestBGWriterError(t *testing.T) {
	var buf [2][]float32
	buf[0], buf[1] = make([]float32, 16), make([]float32, 16)
	bw := newBGWriter(&failAfter{left: 3 * 64})
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = bw.write(buf[i%2])
	}
	if serr := bw.stop(); err == nil {
		err = serr
	}
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("error %v, want the write error", err)
	}
	if err := bw.stop(); err == nil {
		t.Error("second stop lost the error")
	}
	ok := newBGWriter(&failAfter{left: 1 << 20})
	for i := range 10 {
		if err := ok.write(buf[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := ok.stop(); err != nil {
		t.Fatal(err)
	}
}
