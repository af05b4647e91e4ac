package gorgoniaref

import (
	"fmt"
	"math"
	"slices"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/fedtune/fedtune/model"
)

// Gorgonia v0.9.18 pitfalls worked around in graph.go: InverseSqrt's
// gradient is wrong (Inverse(Sqrt) is used); ByIndices' gradient is wrong
// along the last axis (the loss gathers from a flattened [N·V, 1] view
// along axis 0); gradients accumulate into the bound dual values across
// runs (zeroed after each step); symbolic differentiation adds gradient
// nodes for frozen inputs too (only the subgraph needed by the loss and the
// wanted gradients is compiled); Grad may be called only once per graph.
// gorgonia.org/tensor v0.9.24's SoftMax and LogSoftMax start each row's
// maximum at the tensor's first element, so rows far from it come out NaN
// or Inf: softmax.go builds both from a per-row shift, Exp, Sum and a
// division instead.

// graph is the Gorgonia expression graph of one model at a fixed batch
// shape [B, T]: token ids in, mean next-token negative log-likelihood out.
//
// Inside the graph every 2-D weight except the embedding is stored
// transposed ([in, out], so that a projection is x·W); Hugging Face's layout
// ([out, in]) is restored when weights are read back.
type graph struct {
	cfg  model.Config
	B, T int
	dt   tensor.Dtype
	g    *G.ExprGraph

	ids, tgt   *G.Node
	idsT, tgtT *tensor.Dense

	weights map[string]*G.Node // base weights by HF name
	loraA   map[string]*G.Node // A^T [in, r] by base weight name
	loraB   map[string]*G.Node // B^T [r, out] by base weight name
	masks   map[string]*G.Node // dropout masks on adapter inputs, by base weight name
	maskT   map[string]*tensor.Dense
	lora    *model.LoRAConfig

	logp   *G.Node // [N, V] log-probabilities
	loss   *G.Node // scalar mean NLL
	logpV  G.Value
	lossV  G.Value
	params []*G.Node    // trainable nodes, in paramNames order
	names  []string     // HF (or PEFT) names of params
	prog   *G.ExprGraph // the part of g the machine runs
	vm     G.VM
}

// graphSpec says what to build.
type graphSpec struct {
	B, T    int
	dt      tensor.Dtype      // tensor.Float32 (training) or tensor.Float64 (gradient checks)
	lora    *model.LoRAConfig // adapters on lora.Targets; nil for none
	adapter *model.Adapter    // adapter weights (required when lora != nil)
	full    bool              // all base weights trainable (full fine-tuning)
	dropout bool              // dropout masks on adapter inputs (bound by the caller each step)
}

// transposedInGraph reports whether tensor name is stored as its transpose.
func transposedInGraph(name string, shape []int) bool {
	return len(shape) == 2 && name != model.EmbedName
}

// denseFrom builds a graph value of dtype dt from HF-layout data,
// transposing 2-D tensors when trans is set.
func denseFrom(dt tensor.Dtype, shape []int, data []float32, trans bool) *tensor.Dense {
	gshape := slices.Clone(shape)
	if trans {
		gshape[0], gshape[1] = shape[1], shape[0]
	}
	n := len(data)
	at := func(i int) float32 { return data[i] }
	if trans {
		rows, cols := shape[0], shape[1]
		at = func(i int) float32 { // i indexes the [cols, rows] result
			c, r := i/rows, i%rows
			return data[r*cols+c]
		}
	}
	if dt == tensor.Float64 {
		b := make([]float64, n)
		for i := range b {
			b[i] = float64(at(i))
		}
		return tensor.New(tensor.WithShape(gshape...), tensor.WithBacking(b))
	}
	b := make([]float32, n)
	for i := range b {
		b[i] = at(i)
	}
	return tensor.New(tensor.WithShape(gshape...), tensor.WithBacking(b))
}

// readBack copies a graph value into HF-layout float32 data of shape.
func readBack(v G.Value, shape []int, trans bool, dst []float32) {
	get := func(i int) float32 { return 0 }
	switch d := v.Data().(type) {
	case []float32:
		get = func(i int) float32 { return d[i] }
	case []float64:
		get = func(i int) float32 { return float32(d[i]) }
	}
	if !trans {
		for i := range dst {
			dst[i] = get(i)
		}
		return
	}
	rows, cols := shape[0], shape[1]
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			dst[r*cols+c] = get(c*rows + r)
		}
	}
}

func (gr *graph) scalar(v float64) *G.Node {
	if gr.dt == tensor.Float64 {
		return G.NewConstant(v)
	}
	return G.NewConstant(float32(v))
}

// table makes a fixed (non-trainable) tensor node from float64 values.
func (gr *graph) table(name string, shape []int, vals []float64) *G.Node {
	var t *tensor.Dense
	if gr.dt == tensor.Float64 {
		t = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(vals))
	} else {
		b := make([]float32, len(vals))
		for i, v := range vals {
			b[i] = float32(v)
		}
		t = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
	}
	return G.NewTensor(gr.g, gr.dt, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
}

// buildGraph builds the loss graph of m (and of adapter, if any) for
// batches of B windows of T inputs.
func buildGraph(m *model.Model, sp graphSpec) (gr *graph, err error) {
	defer func() {
		if r := recover(); r != nil { // gorgonia panics on some shape errors
			gr, err = nil, fmt.Errorf("model: build graph: %v", r)
		}
	}()
	c := m.Config
	gr = &graph{cfg: c, B: sp.B, T: sp.T, dt: sp.dt, g: G.NewGraph(),
		weights: map[string]*G.Node{}, loraA: map[string]*G.Node{}, loraB: map[string]*G.Node{},
		masks: map[string]*G.Node{}, maskT: map[string]*tensor.Dense{}, lora: sp.lora}
	must := func(n *G.Node, e error) *G.Node {
		if e != nil {
			panic(e)
		}
		return n
	}
	N, V, d := sp.B*sp.T, c.VocabSize, c.HiddenSize
	H, KV, hd := c.NumAttentionHeads, c.KVHeads(), c.HeadDimension()

	for _, name := range m.Names() {
		t := m.Tensors[name]
		tr := transposedInGraph(name, t.Shape)
		val := denseFrom(sp.dt, t.Shape, t.Data, tr)
		n := G.NewTensor(gr.g, sp.dt, len(t.Shape), G.WithShape(val.Shape()...), G.WithName(name), G.WithValue(val))
		gr.weights[name] = n
		if sp.full {
			gr.params = append(gr.params, n)
			gr.names = append(gr.names, name)
		}
	}
	if sp.lora != nil {
		for _, w := range model.AdaptedWeights(&c, sp.lora) {
			an, bn := model.LoRANames(w)
			a, b := sp.adapter.Tensors[an], sp.adapter.Tensors[bn]
			av := denseFrom(sp.dt, a.Shape, a.Data, true)
			bv := denseFrom(sp.dt, b.Shape, b.Data, true)
			gr.loraA[w] = G.NewMatrix(gr.g, sp.dt, G.WithShape(av.Shape()...), G.WithName(an), G.WithValue(av))
			gr.loraB[w] = G.NewMatrix(gr.g, sp.dt, G.WithShape(bv.Shape()...), G.WithName(bn), G.WithValue(bv))
			gr.params = append(gr.params, gr.loraA[w], gr.loraB[w])
			gr.names = append(gr.names, an, bn)
			if sp.dropout && sp.lora.Dropout > 0 {
				in := a.Shape[1]
				mt := tensor.New(tensor.Of(sp.dt), tensor.WithShape(N, in))
				gr.maskT[w] = mt
				gr.masks[w] = G.NewMatrix(gr.g, sp.dt, G.WithShape(N, in), G.WithName("mask."+w), G.WithValue(mt))
			}
		}
	}

	gr.idsT = tensor.New(tensor.WithShape(N), tensor.WithBacking(make([]int, N)))
	gr.tgtT = tensor.New(tensor.WithShape(N), tensor.WithBacking(make([]int, N)))
	gr.ids = G.NewVector(gr.g, tensor.Int, G.WithShape(N), G.WithName("ids"), G.WithValue(gr.idsT))
	gr.tgt = G.NewVector(gr.g, tensor.Int, G.WithShape(N), G.WithName("targets"), G.WithValue(gr.tgtT))

	// Fixed tables: rotary cos/sin (q's pre-scaled by 1/sqrt(head_dim)),
	// the rotate-half matrix, the causal mask, the kv-head expansion.
	cosq, sinq, cosk, sink := gr.ropeTables(N, H, KV, hd)
	rot := make([]float64, hd*hd)
	half := hd / 2
	for j := 0; j < half; j++ {
		rot[(j+half)*hd+j] = -1 // out[j] = -x[j+half]
		rot[j*hd+j+half] = 1    // out[j+half] = x[j]
	}
	R := gr.table("rope.rotate_half", []int{hd, hd}, rot)
	// Grouped-query attention without repeating keys and values: the
	// G = H/KV query heads that share a kv head are stacked as extra rows,
	// so scores are [B*KV, G*T, T] and row g*T+t is query head kv*G+g at
	// position t (HF's repeat_kv maps head h to kv head h/G).
	group := H / KV
	mask := make([]float64, sp.B*KV*group*sp.T*sp.T)
	for bk := 0; bk < sp.B*KV*group; bk++ {
		for i := 0; i < sp.T; i++ {
			for j := i + 1; j < sp.T; j++ {
				mask[(bk*sp.T+i)*sp.T+j] = -1e9
			}
		}
	}
	causal := gr.table("attn.causal_mask", []int{sp.B * KV, group * sp.T, sp.T}, mask)
	rmsnorm := func(x *G.Node, w string) *G.Node {
		ms := must(G.Mean(must(G.Square(x)), 1))
		ms = must(G.Add(ms, gr.scalar(c.RMSNormEps)))
		// Not InverseSqrt: its gradient is wrong in gorgonia v0.9.18.
		r := must(G.Inverse(must(G.Sqrt(ms))))
		r = must(G.Reshape(r, tensor.Shape{N, 1}))
		xn := must(G.BroadcastHadamardProd(x, r, nil, []byte{1}))
		wn := must(G.Reshape(gr.weights[w], tensor.Shape{1, d}))
		return must(G.BroadcastHadamardProd(xn, wn, nil, []byte{0}))
	}
	linear := func(x *G.Node, w string) *G.Node {
		y := must(G.Mul(x, gr.weights[w]))
		if a, ok := gr.loraA[w]; ok {
			in := x
			if mk, ok := gr.masks[w]; ok {
				in = must(G.HadamardProd(x, mk))
			}
			z := must(G.Mul(must(G.Mul(in, a)), gr.loraB[w]))
			z = must(G.HadamardProd(z, gr.scalar(sp.lora.Scaling())))
			y = must(G.Add(y, z))
		}
		return y
	}
	rope := func(x *G.Node, heads int, cos, sin *G.Node) *G.Node {
		x2 := must(G.Reshape(x, tensor.Shape{N * heads, hd}))
		xr := must(G.Mul(x2, R))
		return must(G.Add(must(G.HadamardProd(x2, cos)), must(G.HadamardProd(xr, sin))))
	}
	// [N*H, hd] (q, heads ordered kv*G+g) -> [B*KV, G*T, hd]
	qHeads := func(x *G.Node) *G.Node {
		x = must(G.Reshape(x, tensor.Shape{sp.B, sp.T, KV, group, hd}))
		x = must(G.Transpose(x, 0, 2, 3, 1, 4))
		return must(G.Reshape(x, tensor.Shape{sp.B * KV, group * sp.T, hd}))
	}
	// [N*KV, hd] -> [B*KV, T, hd]
	kvHeads := func(x *G.Node) *G.Node {
		x = must(G.Reshape(x, tensor.Shape{sp.B, sp.T, KV, hd}))
		x = must(G.Transpose(x, 0, 2, 1, 3))
		return must(G.Reshape(x, tensor.Shape{sp.B * KV, sp.T, hd}))
	}

	x := must(G.ByIndices(gr.weights[model.EmbedName], gr.ids, 0)) // [N, d]
	for l := 0; l < c.NumHiddenLayers; l++ {
		h := rmsnorm(x, model.NormName(l, model.InputNorm))
		q := linear(h, model.ProjName(l, "q_proj"))
		k := linear(h, model.ProjName(l, "k_proj"))
		v := linear(h, model.ProjName(l, "v_proj"))
		q3 := qHeads(rope(q, H, cosq, sinq))
		k3 := kvHeads(rope(k, KV, cosk, sink))
		v3 := kvHeads(must(G.Reshape(v, tensor.Shape{N * KV, hd})))
		s := must(G.BatchedMatMul(q3, k3, false, true)) // [B*KV, G*T, T]
		s = must(G.Add(s, causal))
		p := must(stableSoftMax(must(G.Reshape(s, tensor.Shape{sp.B * H * sp.T, sp.T})))) // not G.SoftMax: see softmax.go
		p = must(G.Reshape(p, tensor.Shape{sp.B * KV, group * sp.T, sp.T}))
		o := must(G.BatchedMatMul(p, v3)) // [B*KV, G*T, hd]
		o = must(G.Reshape(o, tensor.Shape{sp.B, KV, group, sp.T, hd}))
		o = must(G.Transpose(o, 0, 3, 1, 2, 4))
		o = must(G.Reshape(o, tensor.Shape{N, H * hd}))
		x = must(G.Add(x, linear(o, model.ProjName(l, "o_proj"))))

		h = rmsnorm(x, model.NormName(l, model.PostNorm))
		g := linear(h, model.ProjName(l, "gate_proj"))
		u := linear(h, model.ProjName(l, "up_proj"))
		act := must(G.HadamardProd(must(G.HadamardProd(g, must(G.Sigmoid(g)))), u))
		x = must(G.Add(x, linear(act, model.ProjName(l, "down_proj"))))
	}
	x = rmsnorm(x, model.FinalNormName)
	var logits *G.Node
	if c.TieWordEmbeddings {
		logits = must(G.Mul(x, must(G.Transpose(gr.weights[model.EmbedName]))))
	} else {
		logits = must(G.Mul(x, gr.weights[model.LMHeadName]))
	}
	gr.logp = must(stableLogSoftMax(logits)) // not G.LogSoftMax: see softmax.go
	// Gather along axis 0 only: ByIndices' gradient is wrong along the last
	// axis in gorgonia v0.9.18, so pick from the flattened [N*V, 1] view.
	flat := must(G.Reshape(gr.logp, tensor.Shape{N * V, 1}))
	picked := must(G.ByIndices(flat, gr.tgt, 0))
	gr.loss = must(G.Neg(must(G.Mean(picked))))
	roots := []*G.Node{G.Read(gr.loss, &gr.lossV), G.Read(gr.logp, &gr.logpV)}

	if len(gr.params) == 0 {
		gr.prog = gr.g.ExactSubgraphRoots(roots...)
		gr.vm = G.NewTapeMachine(gr.prog)
		return gr, nil
	}
	grads, err := G.Grad(gr.loss, gr.params...)
	if err != nil {
		return nil, fmt.Errorf("model: symbolic gradient: %w", err)
	}
	// Gorgonia's symbolic differentiation adds gradient nodes for every
	// input of every op on the path, frozen weights and fixed tables
	// included, and a TapeMachine over the whole graph would compute them
	// all (a third of a LoRA step's matmuls). Compile only what the loss,
	// the log-probabilities and the wanted gradients need.
	roots = append(roots, grads...)
	gr.prog = gr.g.ExactSubgraphRoots(roots...)
	gr.vm = G.NewTapeMachine(gr.prog, G.BindDualValues(gr.params...))
	return gr, nil
}

// ropeTables returns the [N*H, hd] (q) and [N*KV, hd] (k) cos and sin tables in Hugging Face's
// rotate-half convention (frequency i repeated in both halves), for q
// (scaled by 1/sqrt(hd), which folds attention's scaling in) and k.
func (gr *graph) ropeTables(N, H, KV, hd int) (cosq, sinq, cosk, sink *G.Node) {
	cs, sn := gr.cfg.RopeCosSin(gr.T)
	tables := func(heads int, scale float64) ([]float64, []float64) {
		c, s := make([]float64, N*heads*hd), make([]float64, N*heads*hd)
		for row := 0; row < N*heads; row++ {
			t := (row / heads) % gr.T
			for j := 0; j < hd; j++ {
				c[row*hd+j], s[row*hd+j] = cs[t*hd+j]*scale, sn[t*hd+j]*scale
			}
		}
		return c, s
	}
	cq, sq := tables(H, 1/math.Sqrt(float64(hd)))
	ck, sk := tables(KV, 1)
	return gr.table("rope.cos_q", []int{N * H, hd}, cq), gr.table("rope.sin_q", []int{N * H, hd}, sq),
		gr.table("rope.cos_k", []int{N * KV, hd}, ck), gr.table("rope.sin_k", []int{N * KV, hd}, sk)
}

// setBatch binds a batch of windows (each T+1 tokens: inputs then shifted
// targets).
func (gr *graph) setBatch(batch [][]int) error {
	if len(batch) != gr.B {
		return fmt.Errorf("model: batch has %d windows, the graph was built for %d", len(batch), gr.B)
	}
	ids, tgt := gr.idsT.Data().([]int), gr.tgtT.Data().([]int)
	V := gr.cfg.VocabSize
	for b, w := range batch {
		if len(w) != gr.T+1 {
			return fmt.Errorf("model: window %d has %d tokens, want seq_len+1 = %d", b, len(w), gr.T+1)
		}
		for t := 0; t < gr.T; t++ {
			in, out := w[t], w[t+1]
			if in < 0 || in >= V || out < 0 || out >= V {
				return fmt.Errorf("model: window %d position %d: token outside the vocabulary [0, %d)", b, t, V)
			}
			i := b*gr.T + t
			ids[i] = in
			tgt[i] = i*V + out
		}
	}
	if err := G.Let(gr.ids, gr.idsT); err != nil {
		return err
	}
	return G.Let(gr.tgt, gr.tgtT)
}

// run executes the graph once on the bound batch and returns the loss.
func (gr *graph) run() (loss float64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("model: gorgonia run: %v", r)
		}
	}()
	if err := gr.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("model: gorgonia run: %w", err)
	}
	switch v := gr.lossV.Data().(type) {
	case float32:
		return float64(v), nil
	case float64:
		return v, nil
	}
	return 0, fmt.Errorf("model: unexpected loss value %v", gr.lossV)
}

// paramShape returns the HF-layout shape of trainable param i.
func (gr *graph) paramShape(m *model.Model, ad *model.Adapter, i int) []int {
	name := gr.names[i]
	if strings.HasPrefix(name, model.PEFTPrefix) {
		return ad.Tensors[name].Shape
	}
	return m.Tensors[name].Shape
}

// zeroGrads clears the parameters' gradients. Gorgonia's TapeMachine adds
// each run's gradient into the bound dual values and Reset does not clear
// them (its own solvers zero them after each step), so without this the
// second step would see twice the gradient.
func (gr *graph) zeroGrads() error {
	for i, p := range gr.params {
		g, err := p.Grad()
		if err != nil {
			return fmt.Errorf("model: gradient of %s: %w", gr.names[i], err)
		}
		if t, ok := g.(tensor.Tensor); ok {
			t.Zero()
		}
	}
	return nil
}

func (gr *graph) close() {
	if gr.vm != nil {
		gr.vm.Close()
	}
}
