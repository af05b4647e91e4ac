package engine_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/gorgoniaref"
	"github.com/fedtune/fedtune/model/modeltest"
)

// variants are model shapes the engine must agree with model on.
var variants = []struct {
	name string
	mod  func(*model.Config)
}{
	{"mha", func(c *model.Config) { c.NumKeyValueHeads = 4 }},
	{"gqa", func(c *model.Config) {}},
	{"mqa", func(c *model.Config) { c.NumKeyValueHeads = 1 }},
	{"tied", func(c *model.Config) { c.TieWordEmbeddings = true }},
	{"tied-gqa-3layer", func(c *model.Config) { c.TieWordEmbeddings = true; c.NumHiddenLayers = 3 }},
	{"odd-sizes", func(c *model.Config) {
		c.VocabSize, c.HiddenSize, c.IntermediateSize = 29, 12, 19
		c.NumAttentionHeads, c.NumKeyValueHeads = 3, 1
	}},
	{"rope-theta-eps", func(c *model.Config) { c.RopeTheta = 500000; c.RMSNormEps = 1e-2 }},
	{"explicit-head-dim", func(c *model.Config) { c.HeadDim = 6; c.NumKeyValueHeads = 1 }},
	{"rope-llama3", func(c *model.Config) {
		c.RopeScaling = &model.RopeScaling{RopeType: "llama3", Factor: 4, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 1024}
	}},
	{"rope-linear", func(c *model.Config) { c.RopeScaling = &model.RopeScaling{Type: "linear", Factor: 2} }},
	{"one-layer-mha-tied", func(c *model.Config) {
		c.NumHiddenLayers = 1
		c.NumKeyValueHeads = 0
		c.TieWordEmbeddings = true
	}},
}

// variantModel returns a random model of config c with non-trivial norms.
func variantModel(t testing.TB, c model.Config, seed uint64) *model.Model {
	t.Helper()
	m, err := model.New(c, seed)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range m.Names() {
		tn := m.Tensors[name]
		if len(tn.Shape) == 1 {
			r := modeltest.RNG(seed+7, name)
			for i := range tn.Data {
				tn.Data[i] = float32(0.5 + r.Float64())
			}
		}
	}
	return m
}

// batchOf returns B random windows of T+1 tokens.
func batchOf(B, T, V int, seed uint64) [][]int {
	r := modeltest.RNG(seed, "batch")
	out := make([][]int, B)
	for b := range out {
		out[b] = make([]int, T+1)
		for i := range out[b] {
			out[b][i] = r.IntN(V)
		}
	}
	return out
}

// relDiff returns max_i |got−want| / (|want| + rms(want)).
func relDiff(got, want []float32) float64 {
	var ss float64
	for _, v := range want {
		ss += float64(v) * float64(v)
	}
	floor := math.Sqrt(ss / float64(max(len(want), 1)))
	var worst float64
	for i := range want {
		e := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(e) {
			return math.Inf(1)
		}
		if e > 0 {
			worst = max(worst, e/(math.Abs(float64(want[i]))+floor))
		}
	}
	return worst
}

// refLogProbs runs modeltest's float64 reference (with adapter ad
// unmerged, if any) on each window of batch (T inputs each) and returns the
// log-probabilities, flattened.
func refLogProbs(m *model.Model, ad *model.Adapter, batch [][]int, T int) []float32 {
	var out []float32
	for _, w := range batch {
		for _, row := range modeltest.RefLogProbs(m, ad, w[:T]) {
			for _, v := range row {
				out = append(out, float32(v))
			}
		}
	}
	return out
}

// logProbs turns logits [rows, V] into log-probabilities, flattened.
func logProbs(logits []float32, V int) []float32 {
	var out []float32
	for _, row := range modeltest.LogProbs(logits, V) {
		for _, v := range row {
			out = append(out, float32(v))
		}
	}
	return out
}

func newTrainer(t testing.TB, m *model.Model, ad *model.Adapter, cfg model.TrainConfig) *engine.Trainer {
	t.Helper()
	tr, err := engine.NewTrainer(engine.NewHost(), m, ad, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Error(err)
		}
	})
	return tr
}

// TestForwardMatchesReference compares the engine's log-probabilities on
// Host with modeltest's float64 reference, for the base model and with a
// non-zero adapter.
func TestForwardMatchesReference(t *testing.T) {
	const B, T = 3, 7
	for i, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			c := modeltest.TinyConfig()
			v.mod(&c)
			m := variantModel(t, c, uint64(100+i))
			batch := batchOf(B, T, c.VocabSize, uint64(i))
			cfg := model.TrainConfig{Steps: 1, Batch: B, SeqLen: T, LR: 1e-3}
			got, err := newTrainer(t, m, nil, cfg).Forward(batch)
			if err != nil {
				t.Fatal(err)
			}
			want := refLogProbs(m, nil, batch, T)
			if d := relDiff(logProbs(got, c.VocabSize), want); d > 1e-4 {
				t.Errorf("base log-probabilities differ from the reference by %.3g relative (> 1e-4)", d)
			} else {
				t.Logf("base logits: max relative difference %.3g", d)
			}

			lc := model.LoRAConfig{Rank: 3, Alpha: 6, Dropout: 0.2, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}
			ad, err := model.NewAdapter(c, lc, 5)
			if err != nil {
				t.Fatal(err)
			}
			for name, tn := range ad.Tensors {
				if strings.Contains(name, "lora_B") {
					r := modeltest.RNG(9, name)
					for j := range tn.Data {
						tn.Data[j] = float32(r.NormFloat64() * 0.2)
					}
				}
			}
			cfg.LoRA = &lc
			// Windows of T tokens (no target) are accepted by Forward.
			short := make([][]int, B)
			for b := range short {
				short[b] = batch[b][:T]
			}
			got, err = newTrainer(t, m, ad, cfg).Forward(short)
			if err != nil {
				t.Fatal(err)
			}
			want = refLogProbs(m, ad, batch, T)
			if d := relDiff(logProbs(got, c.VocabSize), want); d > 1e-4 {
				t.Errorf("LoRA log-probabilities differ from the reference by %.3g relative (> 1e-4)", d)
			} else {
				t.Logf("LoRA logits: max relative difference %.3g", d)
			}
		})
	}
}

// trainModes are the training set-ups compared with gorgoniaref.Trainer.
//
// AdamW's step is nearly sign(g)·lr at first and is invariant to the scale
// of a tensor's gradient, so matching parameters would not catch a
// gradient wrong by a factor. The "linear" modes set eps = 100, lr = 20 (no
// clipping, no decay) so that an update is about −g/5 and the
// parameters compared then check the gradients' magnitudes too.
var trainModes = []struct {
	name   string
	lora   *model.LoRAConfig
	linear bool
}{
	{"lora", &model.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj", "o_proj", "down_proj"}}, false},
	{"lora-dropout", &model.LoRAConfig{Rank: 2, Alpha: 4, Dropout: 0.25, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}, false},
	{"full", nil, false},
	{"lora-dropout-linear", &model.LoRAConfig{Rank: 3, Alpha: 3, Dropout: 0.1, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}, true},
	{"full-linear", nil, true},
}

// params returns the trained tensors of either trainer, by name.
type trained interface {
	Adapter() *model.Adapter
	Model() *model.Model
}

func params(tr trained, lora bool) map[string]*model.Tensor {
	if lora {
		return tr.Adapter().Tensors
	}
	return tr.Model().Tensors
}

// TestStepsMatchGorgonia trains the same model with gorgoniaref.Trainer
// (Gorgonia) and the engine on Host, batch for batch, and compares the
// loss and every trained parameter after steps 1, 2 and 3.
func TestStepsMatchGorgonia(t *testing.T) {
	const B, T, steps = 2, 6, 3
	worstLoss, worstParam := 0.0, 0.0
	for i, v := range variants {
		for _, mode := range trainModes {
			t.Run(v.name+"/"+mode.name, func(t *testing.T) {
				c := modeltest.TinyConfig()
				v.mod(&c)
				m := variantModel(t, c, uint64(200+i))
				cfg := model.TrainConfig{LoRA: mode.lora, Steps: 10, Batch: B, SeqLen: T, LR: 1e-2, WeightDecay: 0.1,
					ClipNorm: 0.5, Warmup: 2, Seed: uint64(i + 1)}
				if mode.linear {
					cfg.LR, cfg.Eps, cfg.WeightDecay, cfg.ClipNorm, cfg.Schedule = 20, 100, 0, 0, model.ScheduleConstant
				}
				ref, err := gorgoniaref.NewTrainerWithAdapter(m, nil, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer ref.Close()
				eng := newTrainer(t, m, nil, cfg)
				for s := 1; s <= steps; s++ {
					batch := batchOf(B, T, c.VocabSize, uint64(10*i+s))
					want, err := ref.Step(batch)
					if err != nil {
						t.Fatal(err)
					}
					got, err := eng.Step(batch)
					if err != nil {
						t.Fatal(err)
					}
					if d := math.Abs(got-want) / math.Abs(want); d > 1e-4 {
						t.Errorf("step %d: loss %.7g, gorgoniaref.Trainer %.7g (relative difference %.3g > 1e-4)", s, got, want, d)
					} else {
						worstLoss = max(worstLoss, d)
					}
					wp, gp := params(ref, mode.lora != nil), params(eng, mode.lora != nil)
					if len(wp) != len(gp) {
						t.Fatalf("step %d: %d trained tensors, gorgoniaref.Trainer has %d", s, len(gp), len(wp))
					}
					for name, w := range wp {
						g := gp[name]
						if g == nil {
							t.Fatalf("step %d: tensor %s missing", s, name)
						}
						if d := relDiff(g.Data, w.Data); d > 1e-4 {
							t.Errorf("step %d: %s differs from gorgoniaref.Trainer's by %.3g relative (> 1e-4)", s, name, d)
						} else {
							worstParam = max(worstParam, d)
						}
					}
				}
				if eng.StepCount() != steps || eng.Tokens() != steps*B*T {
					t.Errorf("StepCount %d Tokens %d, want %d and %d", eng.StepCount(), eng.Tokens(), steps, steps*B*T)
				}
			})
		}
	}
	t.Logf("max relative difference to gorgoniaref.Trainer: loss %.3g, parameters %.3g", worstLoss, worstParam)
}

// TestContinueAdapter trains further from an existing adapter, as
// gorgoniaref.NewTrainerWithAdapter does, and rejects adapters that do not fit.
func TestContinueAdapter(t *testing.T) {
	c := modeltest.TinyConfig()
	m := variantModel(t, c, 3)
	lc := &model.LoRAConfig{Rank: 2, Alpha: 2, Targets: []string{"v_proj", "q_proj"}}
	cfg := model.TrainConfig{LoRA: lc, Steps: 4, Batch: 2, SeqLen: 5, LR: 1e-2, Seed: 4, Schedule: model.ScheduleConstant}
	first := newTrainer(t, m, nil, cfg)
	for s := 0; s < 2; s++ {
		if _, err := first.Step(batchOf(2, 5, c.VocabSize, uint64(s))); err != nil {
			t.Fatal(err)
		}
	}
	ad := first.Adapter()
	ref, err := gorgoniaref.NewTrainerWithAdapter(m, ad, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	eng := newTrainer(t, m, ad, cfg)
	b := batchOf(2, 5, c.VocabSize, 9)
	want, err := ref.Step(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eng.Step(b)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-want) > 1e-4*math.Abs(want) {
		t.Errorf("continued adapter: loss %g, gorgoniaref.Trainer %g", got, want)
	}
	for name, w := range ref.Adapter().Tensors {
		if d := relDiff(eng.Adapter().Tensors[name].Data, w.Data); d > 1e-4 {
			t.Errorf("continued adapter: %s differs by %.3g", name, d)
		}
	}
	// The passed adapter is copied, not trained in place.
	qa, _ := model.LoRANames(model.ProjName(0, "q_proj"))
	if d := relDiff(ad.Tensors[qa].Data, first.Adapter().Tensors[qa].Data); d != 0 {
		t.Errorf("the adapter passed to NewTrainer changed")
	}

	bad := *lc
	bad.Rank = 3
	cfg.LoRA = &bad
	if _, err := engine.NewTrainer(engine.NewHost(), m, ad, cfg); !errors.Is(err, model.ErrTrainConfig) {
		t.Errorf("adapter of another rank: err = %v, want ErrTrainConfig", err)
	}
	cfg.LoRA = lc
	broken := &model.Adapter{Config: ad.Config, Tensors: map[string]*model.Tensor{}}
	for k, v := range ad.Tensors {
		broken.Tensors[k] = v
	}
	an, _ := model.LoRANames(model.ProjName(1, "v_proj"))
	broken.Tensors[an] = &model.Tensor{Shape: []int{2, 5}, Data: make([]float32, 10)}
	if _, err := engine.NewTrainer(engine.NewHost(), m, broken, cfg); !errors.Is(err, model.ErrAdapter) || !strings.Contains(err.Error(), an) {
		t.Errorf("misshapen adapter tensor: err = %v, want ErrAdapter naming %s", err, an)
	}
}

// TestBadInput checks that bad batches and configs are rejected with a
// clear error and change nothing.
func TestBadInput(t *testing.T) {
	c := modeltest.TinyConfig()
	m := variantModel(t, c, 1)
	lc := &model.LoRAConfig{Rank: 2, Alpha: 4, Dropout: 0.3, Targets: []string{"q_proj", "v_proj"}}
	cfg := model.TrainConfig{LoRA: lc, Steps: 5, Batch: 2, SeqLen: 4, LR: 1e-2, Seed: 3}
	tr := newTrainer(t, m, nil, cfg)
	before := tr.Adapter()
	good := batchOf(2, 4, c.VocabSize, 1)
	cases := []struct {
		name  string
		batch [][]int
		want  string
	}{
		{"one window", good[:1], "batch has 1 windows, the trainer was built for 2"},
		{"short window", [][]int{good[0], good[1][:4]}, "window 1 has 4 tokens, want seq_len+1 = 5"},
		{"token = V", [][]int{good[0], {1, 2, c.VocabSize, 3, 4}}, "window 1 position 2: token 37 outside the vocabulary [0, 37)"},
		{"target = V", [][]int{{1, 2, 3, 4, c.VocabSize}, good[1]}, "window 0 position 4: token 37 outside"},
		{"negative token", [][]int{{1, -1, 3, 4, 5}, good[1]}, "window 0 position 1: token -1 outside"},
	}
	for _, cs := range cases {
		if _, err := tr.Step(cs.batch); err == nil || !strings.Contains(err.Error(), cs.want) {
			t.Errorf("Step %s: err = %v, want it to contain %q", cs.name, err, cs.want)
		}
		if _, err := tr.Forward(cs.batch); err == nil && cs.name != "short window" { // Forward takes seq_len tokens
			t.Errorf("Forward %s: no error", cs.name)
		}
	}
	if tr.StepCount() != 0 || tr.Tokens() != 0 {
		t.Errorf("after rejected batches: StepCount %d Tokens %d", tr.StepCount(), tr.Tokens())
	}
	after := tr.Adapter()
	for name, w := range before.Tensors {
		if relDiff(after.Tensors[name].Data, w.Data) != 0 {
			t.Errorf("rejected batches changed %s", name)
		}
	}
	// Nothing was consumed from the dropout stream either: the first real
	// step equals a fresh trainer's.
	fresh := newTrainer(t, m, nil, cfg)
	l1, err := tr.Step(good)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := fresh.Step(good)
	if err != nil {
		t.Fatal(err)
	}
	_, qb := model.LoRANames(model.ProjName(0, "q_proj"))
	if l1 != l2 || relDiff(tr.Adapter().Tensors[qb].Data, fresh.Adapter().Tensors[qb].Data) != 0 {
		t.Errorf("after rejected batches the first step differs from a fresh trainer's (loss %g vs %g)", l1, l2)
	}

	bad := cfg
	bad.SeqLen = c.MaxPositionEmbeddings + 1
	if _, err := engine.NewTrainer(engine.NewHost(), m, nil, bad); !errors.Is(err, model.ErrTrainConfig) {
		t.Errorf("seq_len > max_position_embeddings: err = %v", err)
	}
	broken := m.Clone()
	delete(broken.Tensors, model.ProjName(1, "up_proj"))
	if _, err := engine.NewTrainer(engine.NewHost(), broken, nil, cfg); !errors.Is(err, model.ErrWeights) {
		t.Errorf("missing tensor: err = %v, want ErrWeights", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(good); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Step after Close: err = %v", err)
	}
}

// TestDeviceErrorSurfaces checks that an error recorded by the device
// (here an id the trainer did not validate, injected through a wrapper)
// comes back from Step with the device's words.
func TestDeviceErrorSurfaces(t *testing.T) {
	c := modeltest.TinyConfig()
	m := variantModel(t, c, 1)
	cfg := model.TrainConfig{Steps: 5, Batch: 1, SeqLen: 4, LR: 1e-2}
	dev := &corruptIDs{Device: engine.NewHost()}
	tr, err := engine.NewTrainer(dev, m, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	before := tr.Model()
	dev.on = true
	if _, err := tr.Step([][]int{{1, 2, 3, 4, 5}}); err == nil || !errors.Is(err, engine.ErrDevice) || !strings.Contains(err.Error(), "id 99 outside") {
		t.Errorf("err = %v, want the device's bad-id error", err)
	}
	dev.on = false
	after := tr.Model()
	for name, w := range before.Tensors {
		if relDiff(after.Tensors[name].Data, w.Data) != 0 {
			t.Errorf("failed step changed %s", name)
		}
	}
	if tr.StepCount() != 0 {
		t.Errorf("StepCount %d after a failed step", tr.StepCount())
	}
	if _, err := tr.Step([][]int{{1, 2, 3, 4, 5}}); err != nil {
		t.Errorf("step after a failed one: %v", err)
	}
}

// corruptIDs replaces the token ids written to the device by 99.
type corruptIDs struct {
	engine.Device
	on bool
}

func (d *corruptIDs) WriteInt(dst engine.IntBuffer, src []int32) {
	if d.on {
		src = append([]int32(nil), src...)
		src[0] = 99
	}
	d.Device.WriteInt(dst, src)
}
