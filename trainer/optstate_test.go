package trainer

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestPretrainKeepsInnerOptState: a pretrain task with Task.OptState
// starts round 1 from fresh moments and leaves its AdamW state in the
// file (job, round and steps in its metadata); round 2 resumes from it
// and trains differently from fresh moments. A state file of another job,
// a corrupt one, or one whose shapes do not fit the model is not used:
// the round trains from fresh moments, says why, and leaves a good file.
func TestPretrainKeepsInnerOptState(t *testing.T) {
	dir, _ := tinyModel(t)
	base, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := base.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := datasets.Load("../datasets/testdata/english/train.txt", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	be, err := NewBackend(DeviceCPU)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	state, err := OptStatePath(work, "pre-1")
	if err != nil {
		t.Fatal(err)
	}
	task := func(round uint64, opt string) Task {
		return Task{JobID: "pre-1", Round: round, ModelDir: dir, OutDir: t.TempDir(), Compression: "none", Base: digest, OptState: opt,
			Train: model.TrainConfig{Steps: 3, Batch: 2, SeqLen: 16, LR: 3e-3, Schedule: model.ScheduleConstant, Seed: 5}}
	}
	fit := func(tk Task) Update {
		t.Helper()
		u, err := be.Fit(context.Background(), tk, Data{Dataset: ds})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	r1 := fit(task(1, state))
	if r1.OptSteps != 0 || r1.OptNote != "" {
		t.Fatalf("round 1: resumed %d steps, note %q; want fresh, no note", r1.OptSteps, r1.OptNote)
	}
	st, round, err := LoadOptState(state, "pre-1")
	if err != nil || st.Steps != 3 || round != 1 || len(st.M) != len(base.Tensors) {
		t.Fatalf("saved state: %v; steps %v, round %d", err, st, round)
	}
	r2 := fit(task(2, state))
	if r2.OptSteps != 3 || r2.OptNote != "" {
		t.Fatalf("round 2: resumed %d steps, note %q; want 3", r2.OptSteps, r2.OptNote)
	}
	if st, round, _ := LoadOptState(state, "pre-1"); st == nil || st.Steps != 6 || round != 2 {
		t.Fatalf("after round 2: %v, round %d; want 6 steps after round 2", st, round)
	}
	fresh := fit(task(2, ""))
	if fresh.Digest == r2.Digest {
		t.Fatal("round 2 from kept moments equals round 2 from fresh ones")
	}

	// A file that cannot be used: fresh moments, a note, and a good file after.
	other := filepath.Join(t.TempDir(), "other.safetensors")
	if err := SaveOptState(other, "another-job", 4, st); err != nil {
		t.Fatal(err)
	}
	otherBytes, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	wrongShape := cloneOpt(st)
	const emb = "model.embed_tokens.weight" // 2-D: flattened, its shape differs
	wrongShape.M[emb].Shape = []int{len(wrongShape.M[emb].Data)}
	wrongShape.V[emb].Shape = []int{len(wrongShape.V[emb].Data)}
	poisoned := cloneOpt(st)
	for _, v := range poisoned.V {
		v.Data[0] = float32(math.Inf(1))
		break
	}
	for _, tc := range []struct {
		name  string
		write func(path string)
		want  string
	}{
		{"poisoned moment", func(p string) { must(t, SaveOptState(p, "pre-1", 2, poisoned)) }, "exp_avg_sq of"},
		{"another job", func(p string) { must(t, os.WriteFile(p, otherBytes, 0o644)) }, `the state of job "another-job", not of job "pre-1"`},
		{"corrupt", func(p string) { must(t, os.WriteFile(p, []byte("not a safetensors file"), 0o644)) }, "saved state not used"},
		{"wrong shape", func(p string) { must(t, SaveOptState(p, "pre-1", 2, wrongShape)) }, "has shape"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.safetensors")
			tc.write(p)
			u := fit(task(3, p))
			if u.OptSteps != 0 || !strings.Contains(u.OptNote, tc.want) || u.Digest != fit(task(3, "")).Digest {
				t.Fatalf("resumed %d steps, note %q; want fresh moments and a note saying %q", u.OptSteps, u.OptNote, tc.want)
			}
			if st, round, err := LoadOptState(p, "pre-1"); err != nil || st.Steps != 3 || round != 3 {
				t.Fatalf("state after the round: %v, round %d, %v; want a fresh 3-step state", st, round, err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOptStatePath: the job ID names the file; one that is not a job
// name (a path, a dot file) is refused.
func TestOptStatePath(t *testing.T) {
	for _, tc := range []struct {
		job, want string
	}{
		{"pretrain-diloco", filepath.Join("w", "optstate", "pretrain-diloco.safetensors")},
		{"../etc/passwd", ""}, {".hidden", ""}, {"a/b", ""}, {"", ""},
	} {
		got, err := OptStatePath("w", tc.job)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("OptStatePath(%q) = %q, %v; want %q", tc.job, got, err, tc.want)
		}
		if err != nil && !errors.Is(err, ErrOptState) {
			t.Errorf("OptStatePath(%q): %v does not wrap ErrOptState", tc.job, err)
		}
	}
}

// TestDecodeOptStateRefuses: each malformed state file is refused, naming
// what is wrong.
func TestDecodeOptStateRefuses(t *testing.T) {
	f32 := func(name string) safetensors.Tensor {
		tn, err := safetensors.FromFloat32(name, safetensors.F32, []int{2}, []float32{1, 2})
		if err != nil {
			t.Fatal(err)
		}
		return tn
	}
	meta := func(kind, job, steps, round string) map[string]string {
		return map[string]string{optMetaKind: kind, optMetaJob: job, optMetaSteps: steps, optMetaRound: round}
	}
	pair := []safetensors.Tensor{f32("w.exp_avg"), f32("w.exp_avg_sq")}
	f16, err := safetensors.FromFloat32("w.exp_avg_sq", safetensors.F16, []int{2}, []float32{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ts   []safetensors.Tensor
		meta map[string]string
		want string
	}{
		{"good", pair, meta(OptStateKind, "j", "5", "2"), ""},
		{"a weights file", pair, nil, `fedtune.kind is "", want "adamw-state"`},
		{"another job", pair, meta(OptStateKind, "k", "5", "2"), `the state of job "k", not of job "j"`},
		{"steps not a number", pair, meta(OptStateKind, "j", "five", "2"), `fedtune.steps "five" is not a step count`},
		{"negative steps", pair, meta(OptStateKind, "j", "-1", "2"), `fedtune.steps "-1"`},
		{"no round", pair, meta(OptStateKind, "j", "5", ""), `fedtune.round "" is not a round`},
		{"first moment alone", pair[:1], meta(OptStateKind, "j", "5", "2"), "parameter w has an .exp_avg but no .exp_avg_sq"},
		{"second moment alone", pair[1:], meta(OptStateKind, "j", "5", "2"), "parameter w has an .exp_avg_sq but no .exp_avg"},
		{"other tensor", []safetensors.Tensor{f32("w")}, meta(OptStateKind, "j", "5", "2"), "tensor w is neither"},
		{"F16 moment", []safetensors.Tensor{pair[0], f16}, meta(OptStateKind, "j", "5", "2"), "tensor w.exp_avg_sq is F16, want F32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := safetensors.Encode(&b, tc.ts, tc.meta); err != nil {
				t.Fatal(err)
			}
			st, _, err := DecodeOptState("state", []byte(b.String()), "j")
			if tc.want == "" {
				if err != nil || st.Steps != 5 || len(st.M["w"].Data) != 2 {
					t.Fatalf("good state: %v %+v", err, st)
				}
				return
			}
			if !errors.Is(err, ErrOptState) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrOptState saying %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeOptState: any bytes either decode to a state whose moments
// pair up, or are refused with ErrOptState; never a panic.
func FuzzDecodeOptState(f *testing.F) {
	var b strings.Builder
	tn, _ := safetensors.FromFloat32("w.exp_avg", safetensors.F32, []int{2}, []float32{1, 2})
	tv, _ := safetensors.FromFloat32("w.exp_avg_sq", safetensors.F32, []int{2}, []float32{1, 2})
	_ = safetensors.Encode(&b, []safetensors.Tensor{tn, tv}, map[string]string{optMetaKind: OptStateKind, optMetaJob: "j", optMetaSteps: "3", optMetaRound: "1"})
	f.Add([]byte(b.String()))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, _, err := DecodeOptState("fuzz", data, "j")
		if err != nil {
			if !errors.Is(err, ErrOptState) {
				t.Fatalf("error %v does not wrap ErrOptState", err)
			}
			return
		}
		if len(st.M) != len(st.V) || st.Steps < 0 {
			t.Fatalf("decoded %d first and %d second moments, %d steps", len(st.M), len(st.V), st.Steps)
		}
		for name, m := range st.M {
			if st.V[name] == nil || m == nil {
				t.Fatalf("%s: no pair", name)
			}
		}
	})
}

type engineOptState = engine.OptState

func cloneOpt(s *engineOptState) *engineOptState {
	c := &engineOptState{Steps: s.Steps, M: map[string]*model.Tensor{}, V: map[string]*model.Tensor{}}
	for k, tn := range s.M {
		c.M[k] = &model.Tensor{Shape: append([]int(nil), tn.Shape...), Data: append([]float32(nil), tn.Data...)}
	}
	for k, tn := range s.V {
		c.V[k] = &model.Tensor{Shape: append([]int(nil), tn.Shape...), Data: append([]float32(nil), tn.Data...)}
	}
	return c
}
