package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/fedtune/fedtune/model"
)

// dropoutStream is the second PCG word of model.Trainer's dropout RNG
// ("dropout"); the first is TrainConfig.Seed. Masks drawn from the same
// stream in the same order are bit-identical to model.Trainer's.
const dropoutStream = 0x64726f706f7574

// ErrClosed is returned by a Trainer used after Close.
var ErrClosed = errors.New("engine: trainer is closed")

// param is one trainable tensor resident on the device.
type param struct {
	name       string
	shape      []int
	w, g, m, v Buffer
	decay      bool
}

// adapted is the LoRA state of one adapted projection.
type adapted struct {
	in, out, r int
	a, b       *param
	za         Buffer // (x⊙mask)·Aᵀ, [N, r], saved for backward
	mask, xm   Buffer // dropout mask and masked input [N, in]; nil without dropout
}

// layerNames are the base weight names of one decoder layer.
type layerNames struct {
	q, k, v, o, gate, up, down string
	inNorm, postNorm           string
}

func namesOf(l int) layerNames {
	return layerNames{
		q: model.ProjName(l, "q_proj"), k: model.ProjName(l, "k_proj"), v: model.ProjName(l, "v_proj"),
		o: model.ProjName(l, "o_proj"), gate: model.ProjName(l, "gate_proj"), up: model.ProjName(l, "up_proj"),
		down: model.ProjName(l, "down_proj"), inNorm: model.NormName(l, model.InputNorm),
		postNorm: model.NormName(l, model.PostNorm),
	}
}

// layerActs are the activations of one decoder layer saved for backward.
type layerActs struct {
	h1, rstd1      Buffer // input norm: [N, d], [N]
	qh, kh, vh, oh Buffer // [B, H, T, hd] (k, v expanded to H heads)
	p              Buffer // attention probabilities [B·H, T, T]
	o              Buffer // merged attention output [N, H·hd]
	xMid           Buffer // residual after attention [N, d]
	h2, rstd2      Buffer // post-attention norm
	g, u, act      Buffer // MLP [N, I]
}

// Trainer runs model.Trainer's training step on a Device. Weights,
// gradients, AdamW moments and activations stay in the device's memory
// between steps; per step only token ids and dropout masks go to the device
// and per-row losses come back. It is not safe for concurrent use.
type Trainer struct {
	dev     Device
	cfg     model.TrainConfig
	base    *model.Model // config and shapes; never modified
	adapter *model.Adapter
	c       model.Config

	// Shapes: batch, sequence length, rows (nB·nT); hidden size, heads, kv
	// heads, head dimension, MLP width, vocabulary, layers, LoRA rank.
	nB, nT, nN                     int
	d, nH, nKV, hd, nI, nV, nL, nR int
	alpha                          float32 // 1/sqrt(hd)

	names   []layerNames      // per layer
	weights map[string]Buffer // every base weight by HF name
	grads   map[string]Buffer // full fine-tuning: gradient by HF name
	params  []*param          // trainable, in model.Trainer's order
	lora    map[string]*adapted
	masked  []string // adapted weights with dropout masks, sorted by name
	// lowest is the lowest block holding a trainable weight, counting the
	// attention block of layer l as 2l and its MLP block as 2l+1; −1 when
	// the embedding is trained. Backward stops there and skips the input
	// gradients nothing below needs.
	lowest int

	ids, tgt   IntBuffer
	cos, sin   Buffer // [T, hd]
	xs         []Buffer
	layers     []layerActs
	hf, rstdf  Buffer
	logits     Buffer // [N, V]; dlogits in place during a step
	loss       Buffer // [N]
	lossHost   []float32
	idsHost    []int32   // a batch's input ids, before upload
	tgtHost    []int32   // and targets
	maskHost   []float32 // a dropout mask, before upload
	q, k, v    Buffer
	dx, dh     Buffer
	dq, dk, dv Buffer
	do, doh    Buffer
	dqh, dkh   Buffer
	dvh, dP    Buffer
	dact       Buffer
	dg, du     Buffer
	dza        Buffer
	ltmp       map[int]Buffer // [N, in] scratch for masked LoRA input gradients
	dhf        Buffer

	mk          batchMasks // loss weights, segments and positions of a StepBatch
	owned       []Buffer
	forwardOnly bool // an inference state (Runner): no parameters, no backward
	rng         *rand.Rand
	trace       Trace     // SetTrace; nil traces nothing
	traceBuf    []float32 // scratch for reading traced outputs
	step        int
	optBase     int // AdamW updates the moments had taken before this run (SetOptState)
	tokens      int
	train       bool // the last forward used dropout masks
	err         error
	closed      bool
}

// NewTrainer prepares training of m on dev under cfg, as
// gorgoniaref.NewTrainerWithAdapter does: with cfg.LoRA set the base weights are
// frozen and only the adapter's A and B are trained (a fresh adapter made
// exactly as model.NewAdapter makes it when ad is nil); without it every
// weight is trained. m and ad are copied to the device and not modified.
// The caller keeps ownership of dev (Close frees the trainer's buffers, not
// the device).
func NewTrainer(dev Device, m *model.Model, ad *model.Adapter, cfg model.TrainConfig) (*Trainer, error) {
	cfg.FillDefaults()
	if err := cfg.Validate(&m.Config); err != nil {
		return nil, err
	}
	if err := checkModel(m); err != nil {
		return nil, err
	}
	c := m.Config
	t := &Trainer{dev: dev, cfg: cfg, base: m, c: c, nB: cfg.Batch, nT: cfg.SeqLen, nN: cfg.Batch * cfg.SeqLen,
		d: c.HiddenSize, nH: c.NumAttentionHeads, nKV: c.KVHeads(), hd: c.HeadDimension(), nI: c.IntermediateSize,
		nV: c.VocabSize, nL: c.NumHiddenLayers, weights: map[string]Buffer{}, grads: map[string]Buffer{},
		lora: map[string]*adapted{}, ltmp: map[int]Buffer{}, rng: rand.New(rand.NewPCG(cfg.Seed, dropoutStream))}
	t.alpha = float32(1 / math.Sqrt(float64(t.hd)))
	for l := 0; l < t.nL; l++ {
		t.names = append(t.names, namesOf(l))
	}
	t.lowest = -1
	if t.nH%t.nKV != 0 {
		return nil, fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", model.ErrTrainConfig, t.nH, t.nKV)
	}
	if cfg.LoRA != nil {
		var err error
		if ad, err = model.TrainingAdapter(m, ad, cfg); err != nil {
			return nil, err
		}
		t.adapter = ad
		t.nR = cfg.LoRA.Rank
		t.lowest = 2 * t.nL
		for l := 0; l < t.nL; l++ {
			for _, p := range ad.Config.Targets {
				block := 2*l + 1
				if p == "q_proj" || p == "k_proj" || p == "v_proj" || p == "o_proj" {
					block = 2 * l
				}
				t.lowest = min(t.lowest, block)
			}
		}
	}
	if err := t.upload(); err != nil {
		t.free()
		return nil, err
	}
	return t, nil
}

// checkModel verifies m's config, and that its tensors are exactly those
// the config implies.
func checkModel(m *model.Model) error {
	if err := m.Config.Validate(); err != nil {
		return err
	}
	return m.Check("model")
}

func prod(s []int) int {
	n := 1
	for _, v := range s {
		n *= v
	}
	return n
}

// alloc allocates a buffer the trainer owns.
func (t *Trainer) alloc(n int) Buffer { return t.own(t.dev.Alloc(n)) }

// own records b as the trainer's (Close frees it) and returns it.
func (t *Trainer) own(b Buffer) Buffer {
	t.owned = append(t.owned, b)
	return b
}

// upload allocates everything and copies the weights to the device.
func (t *Trainer) upload() error {
	dev := t.dev
	N := t.nN
	full := t.cfg.LoRA == nil
	for _, name := range t.base.Names() {
		tn := t.base.Tensors[name]
		w := t.own(uploadWeight(dev, tn, !full, dev.Alloc))
		t.weights[name] = w
		if full {
			n := tn.Len()
			p := &param{name: name, shape: slices.Clone(tn.Shape), w: w, g: t.alloc(n),
				m: t.alloc(n), v: t.alloc(n), decay: len(tn.Shape) == 2}
			t.grads[name] = p.g
			t.params = append(t.params, p)
		}
	}
	if !full {
		ad := t.adapter
		newParam := func(name string) *param {
			tn := ad.Tensors[name]
			p := &param{name: name, shape: slices.Clone(tn.Shape), w: t.alloc(len(tn.Data)), g: t.alloc(len(tn.Data)),
				m: t.alloc(len(tn.Data)), v: t.alloc(len(tn.Data)), decay: len(tn.Shape) == 2}
			dev.Write(p.w, 0, tn.Data)
			return p
		}
		for _, w := range model.AdaptedWeights(&t.c, &ad.Config) {
			an, bn := model.LoRANames(w)
			la := &adapted{a: newParam(an), b: newParam(bn), r: t.nR}
			la.in, la.out = la.a.shape[1], la.b.shape[0]
			la.za = t.alloc(N * t.nR)
			if ad.Config.Dropout > 0 {
				la.mask, la.xm = t.alloc(N*la.in), t.alloc(N*la.in)
				t.masked = append(t.masked, w)
				if t.ltmp[la.in] == nil {
					t.ltmp[la.in] = t.alloc(N * la.in)
				}
			}
			t.lora[w] = la
			t.params = append(t.params, la.a, la.b)
		}
		slices.Sort(t.masked)
		t.dza = t.alloc(N * t.nR)
	}
	return t.allocActs()
}

// allocActs allocates the activations (and, unless the trainer only runs
// forward, the gradients of the backward pass) and uploads the rotary
// tables.
func (t *Trainer) allocActs() error {
	dev := t.dev
	N, d, H, KV, hd, I, T := t.nN, t.d, t.nH, t.nKV, t.hd, t.nI, t.nT
	t.ids, t.tgt = dev.AllocInt(N), dev.AllocInt(N)
	cos, sin := ropeTables(&t.c, T)
	t.cos, t.sin = t.alloc(T*hd), t.alloc(T*hd)
	dev.Write(t.cos, 0, cos)
	dev.Write(t.sin, 0, sin)
	// A forward-only state keeps nothing for a backward pass: every layer
	// runs in the same activations, and the residual stream alternates
	// between two buffers (the memory of one layer, not of all).
	for l := 0; l <= t.nL; l++ {
		if t.forwardOnly && l >= 2 {
			t.xs = append(t.xs, t.xs[l%2])
			continue
		}
		t.xs = append(t.xs, t.alloc(N*d))
	}
	heads := N * H * hd
	for l := 0; l < t.nL; l++ {
		if t.forwardOnly && l > 0 {
			t.layers = append(t.layers, t.layers[0])
			continue
		}
		t.layers = append(t.layers, layerActs{
			h1: t.alloc(N * d), rstd1: t.alloc(N),
			qh: t.alloc(heads), kh: t.alloc(heads), vh: t.alloc(heads), oh: t.alloc(heads),
			p: t.alloc(t.nB * H * T * T), o: t.alloc(heads), xMid: t.alloc(N * d),
			h2: t.alloc(N * d), rstd2: t.alloc(N),
			g: t.alloc(N * I), u: t.alloc(N * I), act: t.alloc(N * I),
		})
	}
	t.hf, t.rstdf, t.logits, t.loss = t.alloc(N*d), t.alloc(N), t.alloc(N*t.nV), t.alloc(N)
	t.lossHost = make([]float32, N)
	t.q, t.k, t.v = t.alloc(heads), t.alloc(N*KV*hd), t.alloc(N*KV*hd)
	if t.forwardOnly {
		return t.synced("upload")
	}
	t.dx, t.dh, t.dhf = t.alloc(N*d), t.alloc(N*d), t.alloc(N*d)
	t.dq, t.dk, t.dv = t.alloc(heads), t.alloc(N*KV*hd), t.alloc(N*KV*hd)
	t.do, t.doh, t.dqh, t.dkh, t.dvh = t.alloc(heads), t.alloc(heads), t.alloc(heads), t.alloc(heads), t.alloc(heads)
	t.dP = t.alloc(t.nB * H * T * T)
	t.dact, t.dg, t.du = t.alloc(N*I), t.alloc(N*I), t.alloc(N*I)
	return t.synced("upload")
}

// synced waits for the device and wraps its error, naming what.
func (t *Trainer) synced(what string) error {
	if err := t.dev.Sync(); err != nil {
		return fmt.Errorf("engine: %s to %s: %w", what, t.dev.Name(), err)
	}
	return nil
}

// ropeTables returns c's [T, hd] cos and sin tables (model's
// Config.RopeCosSin, rope scaling included) in float32.
func ropeTables(c *model.Config, T int) (cos, sin []float32) {
	cs, sn := c.RopeCosSin(T)
	cos, sin = make([]float32, len(cs)), make([]float32, len(sn))
	for i := range cs {
		cos[i], sin[i] = float32(cs[i]), float32(sn[i])
	}
	return cos, sin
}

// free releases every buffer the trainer allocated.
func (t *Trainer) free() {
	for _, b := range t.owned {
		t.dev.Free(b)
	}
	t.owned = nil
	if t.ids != nil {
		t.dev.FreeInt(t.ids)
		t.dev.FreeInt(t.tgt)
		t.ids, t.tgt = nil, nil
	}
}

// Close frees the trainer's device buffers and reports any device error
// still pending. It does not close the device. Calling it twice is a no-op.
func (t *Trainer) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	t.free()
	err := t.dev.Sync()
	if t.err != nil {
		return t.err
	}
	return err
}

// StepCount returns the number of steps taken.
func (t *Trainer) StepCount() int { return t.step }

// Tokens returns the number of input tokens trained on so far.
func (t *Trainer) Tokens() int { return t.tokens }

// Device returns the device the trainer runs on.
func (t *Trainer) Device() Device { return t.dev }

// usable reports why the trainer cannot run, if it cannot.
func (t *Trainer) usable() error {
	if t.closed {
		return ErrClosed
	}
	return t.err
}

// batchIDs validates a batch and returns its input ids and targets. With
// needTargets every window must hold T+1 tokens; otherwise T or T+1 (the
// last token is then ignored).
func (t *Trainer) batchIDs(batch [][]int, needTargets bool) (ids, tgt []int32, err error) {
	if len(batch) != t.nB {
		return nil, nil, fmt.Errorf("engine: batch has %d windows, the trainer was built for %d", len(batch), t.nB)
	}
	if t.idsHost == nil {
		t.idsHost, t.tgtHost = make([]int32, t.nN), make([]int32, t.nN)
	}
	ids, tgt = t.idsHost, t.tgtHost
	for b, w := range batch {
		if len(w) != t.nT+1 && (needTargets || len(w) != t.nT) {
			if needTargets {
				return nil, nil, fmt.Errorf("engine: window %d has %d tokens, want seq_len+1 = %d", b, len(w), t.nT+1)
			}
			return nil, nil, fmt.Errorf("engine: window %d has %d tokens, want seq_len = %d (or seq_len+1)", b, len(w), t.nT)
		}
		for p, id := range w {
			if id < 0 || id >= t.nV {
				return nil, nil, fmt.Errorf("engine: window %d position %d: token %d outside the vocabulary [0, %d)", b, p, id, t.nV)
			}
		}
		for p := 0; p < t.nT; p++ {
			ids[b*t.nT+p] = int32(w[p])
			if len(w) > t.nT {
				tgt[b*t.nT+p] = int32(w[p+1])
			}
		}
	}
	return ids, tgt, nil
}

// drawMasks draws the dropout masks of this step from the trainer's RNG,
// in the order and with the values model.Trainer uses, and uploads them.
func (t *Trainer) drawMasks() {
	if len(t.masked) == 0 {
		return
	}
	keep := 1 - t.cfg.LoRA.Dropout
	val := float32(1 / keep)
	for _, w := range t.masked {
		la := t.lora[w]
		if cap(t.maskHost) < t.nN*la.in {
			t.maskHost = make([]float32, t.nN*la.in)
		}
		m := t.maskHost[:t.nN*la.in]
		clear(m)
		for i := range m {
			if t.rng.Float64() < keep {
				m[i] = val
			}
		}
		t.dev.Write(la.mask, 0, m)
	}
}

// linear computes y = beta·y + x·Wᵀ (+ the adapter's term) for weight name.
func (t *Trainer) linear(y, x Buffer, name string, in, out int, beta float32) {
	dev := t.dev
	dev.MatMul(Gemm{TransB: true, M: t.nN, N: out, K: in, Alpha: 1, Beta: beta, A: x, B: t.weights[name], C: y})
	la := t.lora[name]
	if la == nil {
		return
	}
	xin := x
	if t.train && la.mask != nil {
		dev.Mul(la.xm, x, la.mask)
		xin = la.xm
	}
	s := float32(t.adapter.Config.Scaling())
	dev.MatMul(Gemm{TransB: true, M: t.nN, N: t.nR, K: in, Alpha: 1, A: xin, B: la.a.w, C: la.za})
	dev.MatMul(Gemm{TransB: true, M: t.nN, N: out, K: t.nR, Alpha: s, Beta: 1, A: la.za, B: la.b.w, C: y})
}

// linearBack adds the weight gradients of the forward linear(y, x, name)
// and, if needDx, sets dx = beta·dx + dy·W (+ the adapter's term); without
// needDx dx is left alone (nothing below wants it).
func (t *Trainer) linearBack(dx, dy, x Buffer, name string, in, out int, beta float32, needDx bool) {
	dev := t.dev
	if needDx {
		dev.MatMul(Gemm{M: t.nN, N: in, K: out, Alpha: 1, Beta: beta, A: dy, B: t.weights[name], C: dx})
	}
	if g := t.grads[name]; g != nil {
		dev.MatMul(Gemm{TransA: true, M: out, N: in, K: t.nN, Alpha: 1, Beta: 1, A: dy, B: x, C: g})
	}
	la := t.lora[name]
	if la == nil {
		return
	}
	xin := x
	if la.mask != nil {
		xin = la.xm
	}
	s := float32(t.adapter.Config.Scaling())
	dev.MatMul(Gemm{TransA: true, M: out, N: t.nR, K: t.nN, Alpha: s, Beta: 1, A: dy, B: la.za, C: la.b.g})
	dev.MatMul(Gemm{M: t.nN, N: t.nR, K: out, Alpha: s, A: dy, B: la.b.w, C: t.dza})
	dev.MatMul(Gemm{TransA: true, M: t.nR, N: in, K: t.nN, Alpha: 1, Beta: 1, A: t.dza, B: xin, C: la.a.g})
	if !needDx {
		return
	}
	if la.mask == nil {
		dev.MatMul(Gemm{M: t.nN, N: in, K: t.nR, Alpha: 1, Beta: 1, A: t.dza, B: la.a.w, C: dx})
		return
	}
	tmp := t.ltmp[in]
	dev.MatMul(Gemm{M: t.nN, N: in, K: t.nR, Alpha: 1, A: t.dza, B: la.a.w, C: tmp})
	dev.Mul(tmp, tmp, la.mask)
	dev.Axpy(dx, 1, tmp)
}

func (t *Trainer) head() Buffer {
	if t.c.TieWordEmbeddings {
		return t.weights[model.EmbedName]
	}
	return t.weights[model.LMHeadName]
}

// batched returns the Gemm of B·H per-head products.
func (t *Trainer) batched(g Gemm, sa, sb, sc int) Gemm {
	g.Batch, g.StrideA, g.StrideB, g.StrideC = t.nB*t.nH, sa, sb, sc
	return g
}

// forward runs the model on the uploaded ids and leaves logits [N, V].
func (t *Trainer) forward(train bool) {
	dev := t.dev
	t.train = train
	N, d, H, KV, hd, I, T, B := t.nN, t.d, t.nH, t.nKV, t.hd, t.nI, t.nT, t.nB
	rep := H / KV
	eps := float32(t.c.RMSNormEps)
	th := T * hd
	dev.Embed(t.xs[0], t.weights[model.EmbedName], t.ids, d)
	t.traced(PhaseForward, -1, "embed", t.xs[0])
	for l := 0; l < t.nL; l++ {
		a, nm := &t.layers[l], &t.names[l]
		x := t.xs[l]
		dev.RMSNorm(a.h1, a.rstd1, x, t.weights[nm.inNorm], N, d, eps)
		t.traced(PhaseForward, l, "input_norm", a.h1)
		t.linear(t.q, a.h1, nm.q, d, H*hd, 0)
		t.traced(PhaseForward, l, "q_proj", t.q)
		t.linear(t.k, a.h1, nm.k, d, KV*hd, 0)
		t.traced(PhaseForward, l, "k_proj", t.k)
		t.linear(t.v, a.h1, nm.v, d, KV*hd, 0)
		t.traced(PhaseForward, l, "v_proj", t.v)
		t.rope(t.q, H, false)
		t.rope(t.k, KV, false)
		dev.SplitHeads(a.qh, t.q, B, T, H, hd, 1)
		dev.SplitHeads(a.kh, t.k, B, T, KV, hd, rep)
		dev.SplitHeads(a.vh, t.v, B, T, KV, hd, rep)
		dev.MatMul(t.batched(Gemm{TransB: true, M: T, N: T, K: hd, Alpha: t.alpha, A: a.qh, B: a.kh, C: a.p}, th, th, T*T))
		t.maskScores(a.p)
		dev.CausalSoftmax(a.p, a.p, B*H*T, T)
		t.traced(PhaseForward, l, "attention", a.p)
		dev.MatMul(t.batched(Gemm{M: T, N: hd, K: T, Alpha: 1, A: a.p, B: a.vh, C: a.oh}, T*T, th, th))
		dev.MergeHeads(a.o, a.oh, B, T, H, hd, 1)
		t.traced(PhaseForward, l, "attention_out", a.o)
		dev.Copy(a.xMid, x)
		t.linear(a.xMid, a.o, nm.o, H*hd, d, 1)
		t.traced(PhaseForward, l, "o_proj+residual", a.xMid)

		dev.RMSNorm(a.h2, a.rstd2, a.xMid, t.weights[nm.postNorm], N, d, eps)
		t.traced(PhaseForward, l, "post_attention_norm", a.h2)
		t.linear(a.g, a.h2, nm.gate, d, I, 0)
		t.traced(PhaseForward, l, "gate_proj", a.g)
		t.linear(a.u, a.h2, nm.up, d, I, 0)
		t.traced(PhaseForward, l, "up_proj", a.u)
		dev.SwiGLU(a.act, a.g, a.u)
		t.traced(PhaseForward, l, "swiglu", a.act)
		dev.Copy(t.xs[l+1], a.xMid)
		t.linear(t.xs[l+1], a.act, nm.down, I, d, 1)
		t.traced(PhaseForward, l, "down_proj+residual", t.xs[l+1])
	}
	dev.RMSNorm(t.hf, t.rstdf, t.xs[t.nL], t.weights[model.FinalNormName], N, d, eps)
	t.traced(PhaseForward, -1, "final_norm", t.hf)
	dev.MatMul(Gemm{TransB: true, M: N, N: t.nV, K: d, Alpha: 1, A: t.hf, B: t.head(), C: t.logits})
	t.traced(PhaseForward, -1, "lm_head", t.logits)
}

// backward runs after CrossEntropy has left dlogits in t.logits and adds
// every trainable parameter's gradient.
func (t *Trainer) backward() {
	dev := t.dev
	N, d, H, KV, hd, I, T, B := t.nN, t.d, t.nH, t.nKV, t.hd, t.nI, t.nT, t.nB
	rep := H / KV
	th := T * hd
	full := t.cfg.LoRA == nil
	t.headBackward(full)
	t.traced(PhaseBackward, -1, "lm_head", t.dhf)
	dev.Zero(t.dx)
	dev.RMSNormBackward(t.dx, t.grads[model.FinalNormName], t.dhf, t.xs[t.nL], t.weights[model.FinalNormName], t.rstdf, N, d)
	for l := t.nL - 1; l >= 0 && 2*l+1 >= t.lowest; l-- {
		a, nm := &t.layers[l], &t.names[l]
		// MLP: x_{l+1} = xMid + down(SwiGLU(gate(h2), up(h2))). When this
		// block is the lowest trainable one, only its adapters' gradients
		// are wanted.
		bottom := t.lowest == 2*l+1
		gateUp := !bottom || t.lora[nm.gate] != nil || t.lora[nm.up] != nil
		t.linearBack(t.dact, t.dx, a.act, nm.down, I, d, 0, gateUp)
		if !gateUp {
			break
		}
		dev.SwiGLUBackward(t.dg, t.du, t.dact, a.g, a.u)
		t.linearBack(t.dh, t.dg, a.h2, nm.gate, d, I, 0, !bottom)
		t.linearBack(t.dh, t.du, a.h2, nm.up, d, I, 1, !bottom)
		if bottom {
			break
		}
		dev.RMSNormBackward(t.dx, t.grads[nm.postNorm], t.dh, a.xMid, t.weights[nm.postNorm], a.rstd2, N, d)
		// Attention: xMid = x + o_proj(attention(q, k, v)). At the lowest
		// trainable block only the adapted projections' inputs are wanted.
		bottom = t.lowest == 2*l
		wantQ, wantK, wantV := !bottom || t.lora[nm.q] != nil, !bottom || t.lora[nm.k] != nil, !bottom || t.lora[nm.v] != nil
		t.linearBack(t.do, t.dx, a.o, nm.o, H*hd, d, 0, wantQ || wantK || wantV)
		if !wantQ && !wantK && !wantV {
			break
		}
		dev.SplitHeads(t.doh, t.do, B, T, H, hd, 1)
		if wantQ || wantK {
			dev.MatMul(t.batched(Gemm{TransB: true, M: T, N: T, K: hd, Alpha: 1, A: t.doh, B: a.vh, C: t.dP}, th, th, T*T))
		}
		if wantV {
			dev.MatMul(t.batched(Gemm{TransA: true, M: T, N: hd, K: T, Alpha: 1, A: a.p, B: t.doh, C: t.dvh}, T*T, th, th))
		}
		if wantQ || wantK {
			dev.CausalSoftmaxBackward(t.dP, a.p, t.dP, B*H*T, T)
		}
		if wantQ {
			dev.MatMul(t.batched(Gemm{M: T, N: hd, K: T, Alpha: t.alpha, A: t.dP, B: a.kh, C: t.dqh}, T*T, th, th))
			dev.MergeHeads(t.dq, t.dqh, B, T, H, hd, 1)
			t.rope(t.dq, H, true)
			t.linearBack(t.dh, t.dq, a.h1, nm.q, d, H*hd, 0, !bottom)
		}
		if wantK {
			dev.MatMul(t.batched(Gemm{TransA: true, M: T, N: hd, K: T, Alpha: t.alpha, A: t.dP, B: a.qh, C: t.dkh}, T*T, th, th))
			dev.MergeHeads(t.dk, t.dkh, B, T, KV, hd, rep)
			t.rope(t.dk, KV, true)
			t.linearBack(t.dh, t.dk, a.h1, nm.k, d, KV*hd, 1, !bottom)
		}
		if wantV {
			dev.MergeHeads(t.dv, t.dvh, B, T, KV, hd, rep)
			t.linearBack(t.dh, t.dv, a.h1, nm.v, d, KV*hd, 1, !bottom)
		}
		if bottom {
			break // nothing below this block is trainable
		}
		dev.RMSNormBackward(t.dx, t.grads[nm.inNorm], t.dh, t.xs[l], t.weights[nm.inNorm], a.rstd1, N, d)
		t.traced(PhaseBackward, l, "layer_input", t.dx)
	}
	if full {
		dev.EmbedBackward(t.grads[model.EmbedName], t.dx, t.ids, d)
	}
}

// deviceErr wraps an error from the device.
func (t *Trainer) deviceErr(what string, err error) error {
	return fmt.Errorf("engine: %s on %s: %w", what, t.dev.Name(), err)
}

// Step runs one optimisation step on batch (cfg.Batch windows of
// cfg.SeqLen+1 tokens: inputs, then the shifted targets) and returns the
// mean next-token loss before the update, as model.Trainer.Step does. A bad
// batch is rejected before anything changes. It is StepBatch with only
// Tokens set.
func (t *Trainer) Step(batch [][]int) (float64, error) {
	return t.StepBatch(model.Batch{Tokens: batch})
}

// StepBatch runs one optimisation step on b and returns its loss before
// the update: Σ w·ℓ / Σ w over the targets with b.Loss's weights (the mean
// next-token loss when b.Loss is nil), the gradient scaled alike. With
// b.Segments attention stays within each document of a window, with
// b.Positions rotary positions are b's; see model.Batch. A bad batch, or
// weights that sum to 0, is rejected before anything changes.
func (t *Trainer) StepBatch(b model.Batch) (float64, error) {
	start := time.Now()
	loss, err := t.lossAndGrad(b)
	if err != nil {
		return loss, err
	}
	dev := t.dev
	if t.trace != nil {
		for i := len(t.params) - 1; i >= 0; i-- {
			p := t.params[i]
			t.traced(PhaseGradient, paramLayer(p.name), p.name, p.g)
		}
	}
	var sq float64
	for _, p := range t.params {
		sq += dev.SquaredNorm(p.g)
	}
	if err := dev.Sync(); err != nil {
		return 0, t.deviceErr(fmt.Sprintf("step %d backward", t.step+1), err)
	}
	clip := 1.0
	if norm := math.Sqrt(sq); t.cfg.ClipNorm > 0 && norm > t.cfg.ClipNorm {
		clip = t.cfg.ClipNorm / (norm + 1e-6)
	}
	if t.trace != nil {
		t.traceValues(PhaseClip, -1, "clip", []float32{float32(clip)})
	}
	step := t.step + 1
	b1, b2 := t.cfg.Beta1, t.cfg.Beta2
	hp := AdamW{Clip: float32(clip), LR: float32(t.cfg.LRAt(step)), Beta1: float32(b1), Beta2: float32(b2),
		BC1: float32(1 - math.Pow(b1, float64(t.optBase+step))), BC2: float32(1 - math.Pow(b2, float64(t.optBase+step))),
		Eps: float32(t.cfg.Eps), WeightDecay: float32(t.cfg.WeightDecay)}
	for _, p := range t.params {
		hp.Decay = p.decay
		dev.AdamW(p.w, p.g, p.m, p.v, hp)
		t.traced(PhaseUpdate, paramLayer(p.name), p.name, p.w)
	}
	if err := dev.Sync(); err != nil {
		// Some parameters may have been updated: the trainer is unusable.
		t.err = t.deviceErr(fmt.Sprintf("step %d update", step), err)
		return 0, t.err
	}
	t.step = step
	t.tokens += t.nN
	if t.cfg.Progress != nil {
		t.cfg.Progress(t.step, loss, float64(t.nN)/time.Since(start).Seconds())
	}
	return loss, nil
}

// lossAndGrad runs forward and backward on b and leaves every trainable
// parameter's gradient on the device; it returns the step's loss.
func (t *Trainer) lossAndGrad(b model.Batch) (float64, error) {
	if err := t.usable(); err != nil {
		return 0, err
	}
	ids, tgt, err := t.batchIDs(b.Tokens, true)
	if err != nil {
		return 0, err
	}
	if err := t.setMasks(b); err != nil {
		t.clearMasks()
		return 0, err
	}
	dev := t.dev
	t.drawMasks()
	dev.WriteInt(t.ids, ids)
	dev.WriteInt(t.tgt, tgt)
	t.forward(true)
	scale := 1 / float32(t.nN)
	if t.mk.weighted {
		scale = 1 // headBackward scales row r by w_r/Σw
	}
	dev.CrossEntropy(t.loss, t.logits, t.logits, t.tgt, t.nN, t.nV, scale)
	dev.Read(t.lossHost, t.loss, 0)
	if err := dev.Sync(); err != nil {
		return 0, t.deviceErr(fmt.Sprintf("step %d forward", t.step+1), err)
	}
	t.traceValues(PhaseLoss, -1, "cross_entropy", t.lossHost)
	t.traced(PhaseLoss, -1, "dlogits", t.logits)
	loss := t.lossOf()
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, fmt.Errorf("engine: step %d: loss is %g", t.step+1, loss)
	}
	for _, p := range t.params {
		dev.Zero(p.g)
	}
	t.backward()
	return loss, nil
}

// Run takes steps until cfg.Steps have been taken or ctx is done, reading
// batches from src. It returns the loss of the last step.
func (t *Trainer) Run(ctx context.Context, src model.BatchSource) (float64, error) {
	return model.RunSteps(ctx, t, t.cfg.Steps, src)
}

// Forward runs the model (with the adapter, without dropout) on a batch of
// cfg.Batch windows of cfg.SeqLen tokens (a trailing target token is
// allowed and ignored) and returns the logits, [Batch·SeqLen, V] row-major.
// It changes no weights.
func (t *Trainer) Forward(batch [][]int) ([]float32, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	ids, _, err := t.batchIDs(batch, false)
	if err != nil {
		return nil, err
	}
	t.clearMasks()
	t.dev.WriteInt(t.ids, ids)
	t.forward(false)
	out := make([]float32, t.nN*t.nV)
	t.dev.Read(out, t.logits, 0)
	if err := t.dev.Sync(); err != nil {
		return nil, t.deviceErr("forward", err)
	}
	return out, nil
}

// download reads a device buffer into a new tensor of shape.
func (t *Trainer) download(b Buffer, shape []int) *model.Tensor {
	tn := &model.Tensor{Shape: slices.Clone(shape), Data: make([]float32, prod(shape))}
	t.dev.Read(tn.Data, b, 0)
	return tn
}

// Adapter returns a copy of the adapter's current weights (LoRA only; nil
// otherwise, after Close, after a step failed on the device, or when the
// device fails to read them back: Close then reports why).
func (t *Trainer) Adapter() *model.Adapter {
	if t.adapter == nil || t.usable() != nil {
		return nil
	}
	ad := &model.Adapter{Config: t.adapter.Config, BaseModel: t.adapter.BaseModel, Tensors: map[string]*model.Tensor{}}
	ad.Config.Targets = slices.Clone(ad.Config.Targets)
	for _, p := range t.params {
		ad.Tensors[p.name] = t.download(p.w, p.shape)
	}
	if err := t.dev.Sync(); err != nil {
		t.err = t.deviceErr("read adapter", err)
		return nil
	}
	return ad
}

// Model returns a copy of the model with the current weights read back
// from the device. With LoRA the base weights are those the trainer started
// from (frozen). It returns nil after Close, after a step failed on the
// device (the weights may be half updated), or when the device fails to
// read them back (Close then reports why).
func (t *Trainer) Model() *model.Model {
	if t.usable() != nil {
		return nil
	}
	out := &model.Model{Config: t.c, Tensors: map[string]*model.Tensor{}}
	for _, name := range t.base.Names() {
		out.Tensors[name] = t.download(t.weights[name], t.base.Tensors[name].Shape)
	}
	if err := t.dev.Sync(); err != nil {
		t.err = t.deviceErr("read model", err)
		return nil
	}
	return out
}
