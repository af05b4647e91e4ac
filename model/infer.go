package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// ErrContextFull is returned when a sequence would exceed
// max_position_embeddings.
var ErrContextFull = errors.New("model: sequence longer than max_position_embeddings")

// Runner is a plain-Go forward pass with a key/value cache, for inference
// (eval and generate). It computes the same function as the Gorgonia graph
// (tested to agree) without building one, and appends each new token's keys
// and values to the cache so that generation costs one token per step.
type Runner struct {
	m        *Model
	d, hd    int
	H, KV    int
	maxPos   int
	cos, sin []float32   // [maxPos, hd]
	k, v     [][]float32 // per layer: [maxPos, KV*hd]
	pos      int
}

// NewRunner returns a Runner over m's weights (which it reads, not copies).
func NewRunner(m *Model) (*Runner, error) {
	if err := m.check("model"); err != nil {
		return nil, err
	}
	c := m.Config
	r := &Runner{m: m, d: c.HiddenSize, hd: c.HeadDimension(), H: c.NumAttentionHeads, KV: c.KVHeads(), maxPos: c.MaxPositionEmbeddings}
	// The cache and the rotary tables grow with the sequence (see grow)
	// rather than being sized for max_position_embeddings up front, which
	// for a long-context config would be gigabytes before the first token.
	r.k = make([][]float32, c.NumHiddenLayers)
	r.v = make([][]float32, c.NumHiddenLayers)
	return r, nil
}

// grow makes room in the cache and the rotary tables for positions up to
// n (exclusive).
func (r *Runner) grow(n int) {
	if len(r.cos) >= n*r.hd {
		return
	}
	npos := min(max(n, 2*len(r.cos)/r.hd, 64), r.maxPos)
	cs, sn := r.m.Config.RopeCosSin(npos)
	r.cos, r.sin = make([]float32, len(cs)), make([]float32, len(sn))
	for i := range cs {
		r.cos[i], r.sin[i] = float32(cs[i]), float32(sn[i])
	}
	row := r.KV * r.hd
	size := npos * row
	for l := range r.k {
		k, v := make([]float32, size), make([]float32, size)
		copy(k, r.k[l][:r.pos*row])
		copy(v, r.v[l][:r.pos*row])
		r.k[l], r.v[l] = k, v
	}
}

// Reset empties the cache.
func (r *Runner) Reset() { r.pos = 0 }

// Pos returns the number of tokens in the cache.
func (r *Runner) Pos() int { return r.pos }

// matmulT returns x·Wᵀ for x [n, in] and W [out, in] (HF layout): [n, out].
func matmulT(x []float32, n int, w *Tensor) []float32 {
	out, in := w.Shape[0], w.Shape[1]
	y := make([]float32, n*out)
	blas32.Gemm(blas.NoTrans, blas.Trans, 1,
		blas32.General{Rows: n, Cols: in, Stride: in, Data: x},
		blas32.General{Rows: out, Cols: in, Stride: in, Data: w.Data},
		0, blas32.General{Rows: n, Cols: out, Stride: out, Data: y})
	return y
}

func rmsNorm(x []float32, n, d int, w []float32, eps float64) []float32 {
	y := make([]float32, len(x))
	for i := 0; i < n; i++ {
		row := x[i*d : (i+1)*d]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(d)+eps))
		for j, v := range row {
			y[i*d+j] = w[j] * (v * inv)
		}
	}
	return y
}

// rope rotates each head of x [n, heads*hd] at positions pos0.. in place.
func (r *Runner) rope(x []float32, n, heads, pos0 int) {
	hd, half := r.hd, r.hd/2
	tmp := make([]float32, hd)
	for i := 0; i < n; i++ {
		cs, sn := r.cos[(pos0+i)*hd:], r.sin[(pos0+i)*hd:]
		for h := 0; h < heads; h++ {
			v := x[(i*heads+h)*hd : (i*heads+h+1)*hd]
			for j := 0; j < hd; j++ {
				var rot float32 // rotate_half: (-x2, x1)
				if j < half {
					rot = -v[j+half]
				} else {
					rot = v[j-half]
				}
				tmp[j] = v[j]*cs[j] + rot*sn[j]
			}
			copy(v, tmp)
		}
	}
}

// Forward appends tokens to the sequence and returns the logits [n, V] for
// each of them (the scores of the token that follows).
func (r *Runner) Forward(tokens []int) ([]float32, error) {
	c := &r.m.Config
	n := len(tokens)
	if n == 0 {
		return nil, nil
	}
	if r.pos+n > r.maxPos {
		return nil, fmt.Errorf("%w: %d tokens + %d cached > %d", ErrContextFull, n, r.pos, r.maxPos)
	}
	d, hd, H, KV := r.d, r.hd, r.H, r.KV
	r.grow(r.pos + n)
	emb := r.m.Tensors[embedName]
	x := make([]float32, n*d)
	for i, id := range tokens {
		if id < 0 || id >= c.VocabSize {
			return nil, fmt.Errorf("model: token %d outside the vocabulary [0, %d)", id, c.VocabSize)
		}
		copy(x[i*d:], emb.Data[id*d:(id+1)*d])
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	group := H / KV
	att := make([]float32, n*H*hd)
	scores := make([]float32, r.pos+n)
	for l := 0; l < c.NumHiddenLayers; l++ {
		pfx := fmt.Sprintf("%s%d.", layerNamePrefix, l)
		h := rmsNorm(x, n, d, r.m.Tensors[pfx+"input_layernorm.weight"].Data, c.RMSNormEps)
		q := matmulT(h, n, r.m.Tensors[ProjName(l, "q_proj")])
		k := matmulT(h, n, r.m.Tensors[ProjName(l, "k_proj")])
		v := matmulT(h, n, r.m.Tensors[ProjName(l, "v_proj")])
		r.rope(q, n, H, r.pos)
		r.rope(k, n, KV, r.pos)
		copy(r.k[l][r.pos*KV*hd:], k)
		copy(r.v[l][r.pos*KV*hd:], v)
		K, Vc := r.k[l], r.v[l]
		clear(att)
		for i := 0; i < n; i++ {
			last := r.pos + i // attends to positions 0..last
			for hh := 0; hh < H; hh++ {
				kh := hh / group
				qv := q[(i*H+hh)*hd : (i*H+hh+1)*hd]
				mx := float32(math.Inf(-1))
				for s := 0; s <= last; s++ {
					kv := K[(s*KV+kh)*hd : (s*KV+kh+1)*hd]
					var dot float32
					for j := range qv {
						dot += qv[j] * kv[j]
					}
					dot *= scale
					scores[s] = dot
					mx = max(mx, dot)
				}
				var z float64
				for s := 0; s <= last; s++ {
					e := math.Exp(float64(scores[s] - mx))
					scores[s] = float32(e)
					z += e
				}
				o := att[(i*H+hh)*hd : (i*H+hh+1)*hd]
				for s := 0; s <= last; s++ {
					p := scores[s] / float32(z)
					vv := Vc[(s*KV+kh)*hd : (s*KV+kh+1)*hd]
					for j := range o {
						o[j] += p * vv[j]
					}
				}
			}
		}
		o := matmulT(att, n, r.m.Tensors[ProjName(l, "o_proj")])
		for i := range x {
			x[i] += o[i]
		}
		h = rmsNorm(x, n, d, r.m.Tensors[pfx+"post_attention_layernorm.weight"].Data, c.RMSNormEps)
		g := matmulT(h, n, r.m.Tensors[ProjName(l, "gate_proj")])
		u := matmulT(h, n, r.m.Tensors[ProjName(l, "up_proj")])
		for i, gv := range g {
			g[i] = gv / (1 + float32(math.Exp(float64(-gv)))) * u[i]
		}
		dn := matmulT(g, n, r.m.Tensors[ProjName(l, "down_proj")])
		for i := range x {
			x[i] += dn[i]
		}
	}
	r.pos += n
	h := rmsNorm(x, n, d, r.m.Tensors[finalNormName].Data, c.RMSNormEps)
	return matmulT(h, n, r.m.lmHead()), nil
}

// logSoftmaxAt returns log p(target) from one row of logits.
func logSoftmaxAt(logits []float32, target int) float64 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = math.Max(mx, float64(v))
	}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - mx)
	}
	return float64(logits[target]) - mx - math.Log(z)
}

// EvalResult is the outcome of Evaluate.
type EvalResult struct {
	Tokens     int     `json:"tokens"`     // predicted tokens
	MeanNLL    float64 `json:"mean_nll"`   // nats per predicted token
	Perplexity float64 `json:"perplexity"` // exp(MeanNLL)
}

// Evaluate scores a token stream: it is cut into non-overlapping windows of
// max_position_embeddings tokens (a final shorter window of at least two
// tokens counts), each window is run from an empty cache, and token t+1 of
// a window is predicted from tokens 0..t. progress, if set, is called after
// each window with the tokens predicted so far.
func Evaluate(ctx context.Context, m *Model, tokens []int, progress func(done, total int)) (EvalResult, error) {
	r, err := NewRunner(m)
	if err != nil {
		return EvalResult{}, err
	}
	L := m.Config.MaxPositionEmbeddings
	V := m.Config.VocabSize
	var sum float64
	var count int
	total := 0
	for s := 0; s < len(tokens); s += L {
		if e := min(s+L, len(tokens)); e-s >= 2 {
			total += e - s - 1
		}
	}
	for s := 0; s < len(tokens); s += L {
		if err := ctx.Err(); err != nil {
			return EvalResult{}, err
		}
		w := tokens[s:min(s+L, len(tokens))]
		if len(w) < 2 {
			break
		}
		r.Reset()
		logits, err := r.Forward(w[:len(w)-1])
		if err != nil {
			return EvalResult{}, err
		}
		for i := 0; i < len(w)-1; i++ {
			sum -= logSoftmaxAt(logits[i*V:(i+1)*V], w[i+1])
		}
		count += len(w) - 1
		if progress != nil {
			progress(count, total)
		}
	}
	if count == 0 {
		return EvalResult{}, fmt.Errorf("model: evaluate: need at least 2 tokens, got %d", len(tokens))
	}
	mean := sum / float64(count)
	return EvalResult{Tokens: count, MeanNLL: mean, Perplexity: math.Exp(mean)}, nil
}

// GenerateConfig controls sampling.
type GenerateConfig struct {
	MaxTokens   int     // new tokens to produce at most
	Temperature float64 // 0 = greedy
	TopP        float64 // nucleus sampling threshold in (0, 1]; 0 means 1
	Seed        uint64
	Stop        []int // token ids that end generation (not emitted)
}

// Generate continues prompt and returns the new token ids. It stops at
// MaxTokens, at a Stop token, or when the context is full.
func Generate(ctx context.Context, m *Model, prompt []int, gc GenerateConfig) ([]int, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("model: generate: empty prompt")
	}
	if gc.Temperature < 0 || gc.TopP < 0 || gc.TopP > 1 || gc.MaxTokens < 0 {
		return nil, fmt.Errorf("model: generate: need temperature >= 0, top_p in (0, 1], max_tokens >= 0")
	}
	if len(prompt) > m.Config.MaxPositionEmbeddings {
		return nil, fmt.Errorf("%w: prompt is %d tokens, max_position_embeddings is %d", ErrContextFull, len(prompt), m.Config.MaxPositionEmbeddings)
	}
	r, err := NewRunner(m)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(gc.Seed, 0x67656e))
	V := m.Config.VocabSize
	logits, err := r.Forward(prompt)
	if err != nil {
		return nil, err
	}
	last := logits[(len(prompt)-1)*V:]
	var out []int
	for len(out) < gc.MaxTokens {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		next := sample(last, gc.Temperature, gc.TopP, rng)
		for _, s := range gc.Stop {
			if next == s {
				return out, nil
			}
		}
		out = append(out, next)
		if r.Pos() >= r.maxPos || len(out) == gc.MaxTokens {
			break
		}
		if last, err = r.Forward([]int{next}); err != nil {
			return out, err
		}
	}
	return out, nil
}

// sample draws a token from logits: argmax at temperature 0, else softmax
// at temperature restricted to the smallest set with mass >= topP.
func sample(logits []float32, temp, topP float64, rng *rand.Rand) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if temp == 0 {
		return best
	}
	if topP == 0 {
		topP = 1
	}
	type cand struct {
		id int
		p  float64
	}
	cs := make([]cand, len(logits))
	var z float64
	for i, v := range logits {
		p := math.Exp((float64(v) - float64(logits[best])) / temp)
		cs[i] = cand{i, p}
		z += p
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].p > cs[j].p })
	var mass float64
	cut := len(cs)
	for i := range cs {
		cs[i].p /= z
		mass += cs[i].p
		if mass >= topP {
			cut = i + 1
			break
		}
	}
	cs = cs[:cut]
	u := rng.Float64() * mass
	for _, c := range cs {
		u -= c.p
		if u < 0 {
			return c.id
		}
	}
	return cs[len(cs)-1].id
}
