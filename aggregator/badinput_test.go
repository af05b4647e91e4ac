package aggregator

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model/safetensors"
)

func TestBadInputsAreRejected(t *testing.T) {
	cases := []struct {
		name   string
		tensor string // expected in the error ("" for file-level faults)
		msg    string
		mutate func(t *testing.T, path string, w weights)
	}{
		{"nan", "layers.0.norm", "element 7 is NaN", func(t *testing.T, p string, w weights) {
			w["layers.0.norm"][7] = float32(math.NaN())
			writeWeights(t, p, w, safetensors.F32, nil)
		}},
		{"inf in bf16", "lm_head", "is +Inf", func(t *testing.T, p string, w weights) {
			w["lm_head"][4000] = float32(math.Inf(1))
			writeWeights(t, p, w, safetensors.BF16, nil)
		}},
		{"shape", "lm_head", "shape [3 2 700]", func(t *testing.T, p string, w weights) {
			ts := w.tensors(t, safetensors.F32)
			for i := range ts {
				if ts[i].Name == "lm_head" {
					ts[i].Shape = []int{3, 2, 700}
				}
			}
			if _, err := safetensors.WriteFile(p, ts, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"dtype", "layers.0.norm", "dtype I32 is not an update encoding", func(t *testing.T, p string, w weights) {
			ts := w.tensors(t, safetensors.F32)
			for i := range ts {
				if ts[i].Name == "layers.0.norm" {
					ts[i].DType = safetensors.I32
				}
			}
			if _, err := safetensors.WriteFile(p, ts, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"i8 without scales metadata", "layers.0.norm", "dtype I8 needs", func(t *testing.T, p string, w weights) {
			ts := w.tensors(t, safetensors.F32)
			for i := range ts {
				if ts[i].Name == "layers.0.norm" {
					ts[i].DType, ts[i].Data = safetensors.I8, make([]byte, 10)
				}
			}
			if _, err := safetensors.WriteFile(p, ts, nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"missing", "layers.0.norm", "missing", func(t *testing.T, p string, w weights) {
			delete(w, "layers.0.norm")
			writeWeights(t, p, w, safetensors.F32, nil)
		}},
		{"extra", "zz.extra", "unexpected tensor", func(t *testing.T, p string, w weights) {
			ts := w.tensors(t, safetensors.F32)
			x, _ := safetensors.FromFloat32("zz.extra", safetensors.F32, []int{2}, []float32{1, 2})
			if _, err := safetensors.WriteFile(p, append(ts, x), nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", "lm_head", "truncated", func(t *testing.T, p string, w weights) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b[:len(b)-100], 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"bad kind", "", "fedtune.kind", func(t *testing.T, p string, w weights) {
			writeWeights(t, p, w, safetensors.F32, map[string]string{MetaKind: "gradient"})
		}},
		{"bad num_samples", "", "num_samples", func(t *testing.T, p string, w weights) {
			writeWeights(t, p, w, safetensors.F32, map[string]string{MetaNumSamples: "-3"})
		}},
		{"norm bound", "", "exceeds the bound", func(t *testing.T, p string, w weights) {
			for i := range w["lm_head"] {
				w["lm_head"][i] += 1
			}
			writeWeights(t, p, w, safetensors.F32, nil)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 10, 5)
			victim := 2
			tc.mutate(t, f.paths[victim], f.ws[victim])
			opts := Options{MaxNorm: 30}
			// Library, lenient: the bad input is reported and the rest reduced.
			res, got := aggregate(t, Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Base: f.base, Options: opts})
			if len(res.Rejected) != 1 || res.Rejected[0].Input != victim || len(res.Accepted) != 4 {
				t.Fatalf("rejected %+v, accepted %d", res.Rejected, len(res.Accepted))
			}
			r := res.Rejected[0]
			if !errors.Is(r.Err, ErrInvalidUpdate) || r.Tensor != tc.tensor || !strings.Contains(r.Err.Error(), tc.msg) || !strings.Contains(r.Err.Error(), f.paths[victim]) {
				t.Fatalf("rejection %v (tensor %q), want %q naming the file and tensor %q", r.Err, r.Tensor, tc.msg, tc.tensor)
			}
			t.Logf("rejected: %v", r.Err)
			var xs [][]float64
			var ws []float64
			for i := range f.ws {
				if i != victim {
					xs = append(xs, f.ws[i].flat())
					ws = append(ws, f.samples[i])
				}
			}
			assertClose(t, "fedavg of the good inputs", got, refFedAvg(xs, ws), 1e-6)

			// Validate finds the same rejection without reducing, over all
			// inputs and over the victim alone; a good input alone passes.
			vr, err := Validate(context.Background(), Request{Inputs: f.inputs(), Base: f.base, Options: opts})
			if err != nil || len(vr) != 1 || vr[0].Input != victim || vr[0].Reason() != r.Reason() {
				t.Fatalf("Validate: %+v %v, want the rejection %q", vr, err, r.Reason())
			}
			vr, err = Validate(context.Background(), Request{Inputs: f.inputs()[victim : victim+1], Base: f.base, Options: opts})
			if err != nil || len(vr) != 1 || vr[0].Reason() != r.Reason() {
				t.Fatalf("Validate of the victim alone: %+v %v, want the rejection %q", vr, err, r.Reason())
			}
			if vr, err := Validate(context.Background(), Request{Inputs: f.inputs()[:1], Base: f.base, Options: opts}); err != nil || len(vr) != 0 {
				t.Fatalf("Validate of a good input: %+v %v", vr, err)
			}

			// Strict: an error naming file and tensor, nothing written.
			dir := t.TempDir()
			_, err = Aggregate(context.Background(), Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Base: f.base, Options: Options{MaxNorm: 30, Strict: true},
				Out: filepath.Join(dir, "out.safetensors")})
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), f.paths[victim]) || !strings.Contains(err.Error(), tc.tensor) {
				t.Fatalf("strict: err = %v", err)
			}
			assertEmptyDir(t, dir)
		})
	}
}

func TestRequestErrors(t *testing.T) {
	f := newFixture(t, 11, 5)
	cp := filepath.Join(t.TempDir(), "copy.safetensors")
	b, _ := os.ReadFile(f.paths[0])
	os.WriteFile(cp, b, 0o644)
	twice := append(f.inputs(), Input{Path: f.paths[1]})
	sameContent := append(f.inputs(), Input{Path: cp})
	dupID := f.inputs()
	for i := range dupID {
		dupID[i].ContributorID = "a"
	}
	someIDs := f.inputs()
	someIDs[0].ContributorID = "a"
	badWeight := f.inputs()
	badWeight[1].Weight = -1
	stateForAvg := filepath.Join(t.TempDir(), "s.safetensors")
	cases := []struct {
		name string
		req  Request
		want error
		msg  string
	}{
		{"same path twice", Request{Strategy: &FedAvg{}, Inputs: twice}, ErrDuplicateInput, f.paths[1]},
		{"same digest twice", Request{Strategy: &FedAvg{}, Inputs: sameContent}, ErrDuplicateInput, cp},
		{"same contributor twice", Request{Strategy: &FedAvg{}, Inputs: dupID}, ErrDuplicateInput, `"a"`},
		{"some IDs", Request{Strategy: &FedAvg{}, Inputs: someIDs}, ErrBadParams, "contributor ID"},
		{"negative weight", Request{Strategy: &FedAvg{}, Inputs: badWeight}, ErrBadParams, "weight -1"},
		{"noise without clip", Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Options: Options{NoiseMultiplier: 1}}, ErrBadParams, "--clip"},
		{"clip without base", Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Options: Options{Clip: 1}}, ErrBadParams, "--base"},
		{"fedadam without base", Request{Strategy: NewFedAdam(), Inputs: f.inputs()}, ErrBadParams, "--base"},
		{"state for fedavg", Request{Strategy: &FedAvg{}, Inputs: f.inputs(), State: stateForAvg}, ErrBadParams, "no server state"},
		{"missing base", Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Base: filepath.Join(t.TempDir(), "nope")}, ErrBadBase, "nope"},
		{"krum too many byzantine", Request{Strategy: &Krum{Byzantine: 2}, Inputs: f.inputs()}, ErrBadParams, "2f+2"},
		{"wrong state", Request{Strategy: NewFedAdam(), Inputs: f.inputs(), Base: f.base, State: f.paths[0]}, ErrBadState, "m/layers.0.mlp.weight"},
		{"no inputs", Request{Strategy: &FedAvg{}}, ErrNoViableUpdates, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.req.Out = filepath.Join(dir, "out.safetensors")
			_, err := Aggregate(context.Background(), tc.req)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			t.Log(err)
			assertEmptyDir(t, dir)
		})
	}
}

func TestAllInputsBad(t *testing.T) {
	f := newFixture(t, 12, 2)
	for _, p := range f.paths {
		os.WriteFile(p, []byte("not safetensors"), 0o644)
	}
	dir := t.TempDir()
	_, err := Aggregate(context.Background(), Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Out: filepath.Join(dir, "o.safetensors")})
	if !errors.Is(err, ErrNoViableUpdates) || !strings.Contains(err.Error(), f.paths[1]) {
		t.Fatalf("err = %v", err)
	}
	assertEmptyDir(t, dir)
}

func TestCancelledContextWritesNothing(t *testing.T) {
	f := newFixture(t, 13, 3)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Aggregate(ctx, Request{Strategy: &FedAvg{}, Inputs: f.inputs(), Out: filepath.Join(dir, "o.safetensors")})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	assertEmptyDir(t, dir)
}
