package engine_test

import (
	"slices"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
)

// traceRun trains steps steps (batch seeds from seeds) with the trace on at
// step traceAt (0: never) and returns the trace and the trained state.
func traceRun(t *testing.T, m *model.Model, cfg model.TrainConfig, seeds []uint64, traceAt int) ([]engine.TraceOp, map[string]*model.Tensor) {
	t.Helper()
	tr := newTrainer(t, m, nil, cfg)
	var ops []engine.TraceOp
	for s, seed := range seeds {
		if s+1 == traceAt {
			tr.SetTrace(func(op engine.TraceOp) { ops = append(ops, op) })
		} else {
			tr.SetTrace(nil)
		}
		if _, err := tr.Step(batchOf(cfg.Batch, cfg.SeqLen, m.Config.VocabSize, seed)); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.LoRA != nil {
		return ops, tr.Adapter().Tensors
	}
	return ops, tr.Model().Tensors
}

// TestTrace: a traced step gives the same bits as an untraced one, its
// operations come in phase order with the update digests of the state
// after the step, and two steps on different batches first differ at the
// embedding.
func TestTrace(t *testing.T) {
	c := benchBaseConfig()
	c.NumHiddenLayers = 2
	m, err := model.New(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		lora *model.LoRAConfig
	}{
		{"lora", &model.LoRAConfig{Rank: 2, Alpha: 4, Dropout: 0.1, Targets: []string{"q_proj", "down_proj"}}},
		{"full", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := model.TrainConfig{LoRA: tc.lora, Steps: 3, Batch: 2, SeqLen: 12, LR: 1e-2, ClipNorm: 1, Seed: 4}
			seeds := []uint64{1, 2, 3}
			off, plain := traceRun(t, m, cfg, seeds, 0)
			if len(off) != 0 {
				t.Fatalf("untraced run traced %d operations", len(off))
			}
			ops, traced := traceRun(t, m, cfg, seeds, 2)
			for name, x := range plain {
				if !slices.Equal(x.Data, traced[name].Data) {
					t.Fatalf("tracing changed %s", name)
				}
			}
			phases := []string{engine.PhaseForward, engine.PhaseLoss, engine.PhaseBackward, engine.PhaseGradient, engine.PhaseClip, engine.PhaseUpdate}
			last := 0
			updates := map[string]string{}
			for _, op := range ops {
				if op.Step != 2 {
					t.Fatalf("operation %+v of step %d, want 2", op, op.Step)
				}
				i := slices.Index(phases, op.Phase)
				if i < last {
					t.Fatalf("operation %+v after phase %s", op, phases[last])
				}
				last = i
				if op.Phase == engine.PhaseUpdate {
					updates[op.Name] = op.Digest
				}
			}
			if len(updates) != len(plain) {
				t.Fatalf("%d update operations for %d trainable tensors", len(updates), len(plain))
			}
			// Step 3 changes the state after step 2; retrain to 2 steps.
			_, after2 := traceRun(t, m, cfg, seeds[:2], 0)
			for name, x := range after2 {
				if updates[name] != engine.TensorDigest(x.Data) {
					t.Fatalf("update digest of %s is not the digest of its data after the step", name)
				}
			}
			// Another batch at step 2: the first operation that differs is
			// the embedding of the forward pass.
			other, _ := traceRun(t, m, cfg, []uint64{1, 9, 3}, 2)
			if len(other) != len(ops) {
				t.Fatalf("%d operations, then %d", len(ops), len(other))
			}
			i, differ := engine.FirstDifference(ops, other)
			if !differ || ops[i].Phase != engine.PhaseForward || ops[i].Name != "embed" {
				t.Fatalf("first differing operation %d: %+v", i, ops[min(i, len(ops)-1)])
			}
		})
	}
}

// faultySwiGLU is a device whose SwiGLU gets one element wrong on its
// n-th call: a kernel that miscomputes.
type faultySwiGLU struct {
	engine.Device
	n, calls int
}

func (d *faultySwiGLU) SwiGLU(act, g, u engine.Buffer) {
	d.Device.SwiGLU(act, g, u)
	if d.calls++; d.calls != d.n {
		return
	}
	v := make([]float32, act.Len())
	d.Read(v, act, 0)
	v[3] += 1e-3
	d.Write(act, 0, v)
}

// TestTraceNamesFaultyOperation: the traces of one step on a sound device
// and on one whose SwiGLU miscomputes in layer 1 first differ at layer 1's
// swiglu, every operation before it agreeing.
func TestTraceNamesFaultyOperation(t *testing.T) {
	c := benchBaseConfig()
	m, err := model.New(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	cfg := model.TrainConfig{LoRA: &model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj"}}, Steps: 1, Batch: 2, SeqLen: 12, LR: 1e-2, Seed: 4}
	trace := func(dev engine.Device) []engine.TraceOp {
		tr, err := engine.NewTrainer(dev, m, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		var ops []engine.TraceOp
		tr.SetTrace(func(op engine.TraceOp) { ops = append(ops, op) })
		if _, err := tr.Step(batchOf(cfg.Batch, cfg.SeqLen, c.VocabSize, 1)); err != nil {
			t.Fatal(err)
		}
		return ops
	}
	sound := trace(engine.NewHost())
	faulty := trace(&faultySwiGLU{Device: engine.NewHost(), n: 2}) // layer 0's call, then layer 1's
	i, differ := engine.FirstDifference(sound, faulty)
	if !differ || sound[i].Phase != engine.PhaseForward || sound[i].Layer != 1 || sound[i].Name != "swiglu" {
		t.Fatalf("first difference at %d: %+v", i, sound[min(i, len(sound)-1)])
	}
	if _, differ := engine.FirstDifference(sound, sound[:len(sound)-1]); !differ {
		t.Fatal("a trace that ends early does not differ")
	}
}
