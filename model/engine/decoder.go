package engine

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedtune/fedtune/model"
)

// ErrSlot is wrapped by Decoder errors about slot arguments.
var ErrSlot = errors.New("engine: bad decoder slot")

// errDecoderClosed is returned by a Decoder used after Close.
var errDecoderClosed = errors.New("engine: decoder is closed")

// Chunk is the next tokens of one sequence for Decoder.Forward.
type Chunk struct {
	// Slot is the sequence's slot, in [0, Slots).
	Slot int
	// Tokens are appended to the sequence at its current length.
	Tokens []int
	// Logits asks for the logits of the chunk's last token.
	Logits bool
}

// Decoder runs a model's forward pass with a key/value cache: a fixed
// number of sequence slots, each holding the keys (after RoPE) and values
// of every layer for up to MaxContext positions, allocated once. Forward
// runs the next tokens of any set of slots as one batch of rows: a whole
// prompt (prefill), a part of one (chunked prefill) or one token
// (decoding), the rows of all chunks going through each layer's matrix
// products together, each row attending to its own sequence's cache.
//
// Every row is computed by the same operations whatever else runs beside
// it (on the Host: its GEMMs compute each row of C the same way wherever
// it lies, and attention is per row), so a sequence's logits do not depend
// on how its tokens were split into chunks or batched with other
// sequences. They agree with Runner.Logits on the whole sequence to float32
// rounding (attention sums in another order).
//
// A Decoder is not safe for concurrent use (Batcher shares one between
// requests); the caller keeps ownership of the device.
type Decoder struct {
	dev     CacheDevice
	c       model.Config
	weights map[string]Buffer
	names   []layerNames
	owned   []Buffer

	slots, maxCtx          int
	d, nH, nKV, hd, nI, nV int
	alpha                  float32
	kc, vc                 []Buffer // per layer: [(slots+1)·maxCtx, KV·hd]; slot `slots` takes padding rows
	cos, sin               Buffer   // [maxCtx, hd]
	lens                   []int    // per slot: positions cached
	seen                   []bool   // per slot: check's scratch

	acts  map[int]*decodeActs // by row count (bucketed)
	clock int                 // actsFor's calls, for its LRU
	sels  map[int]*selActs    // by logits rows (bucketed)
	err   error
}

// decodeActs are the activations of one Forward of n rows.
type decodeActs struct {
	n, used                    int
	ids, pos, cidx, at         IntBuffer
	cos, sin                   Buffer
	x, xMid, h, rstd           Buffer
	q, att, k, v               Buffer
	g, u, act                  Buffer
	ids32, pos32, cidx32, at32 []int32
}

// selActs are the rows whose logits a Forward returns.
type selActs struct {
	n            int
	sel          IntBuffer
	xs, hs, rstd Buffer
	logits       Buffer
	sel32        []int32
	host         []float32
}

// NewDecoder uploads m's weights to dev and allocates a cache of slots
// sequences of up to maxContext positions (at most the model's
// max_position_embeddings).
func NewDecoder(dev CacheDevice, m *model.Model, slots, maxContext int) (*Decoder, error) {
	if err := checkModel(m); err != nil {
		return nil, err
	}
	c := m.Config
	if c.NumAttentionHeads%c.KVHeads() != 0 {
		return nil, fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", model.ErrConfig, c.NumAttentionHeads, c.KVHeads())
	}
	if slots < 1 || maxContext < 1 || maxContext > c.MaxPositionEmbeddings {
		return nil, fmt.Errorf("engine: decoder: need slots >= 1 and a context in [1, %d], got %d slots of %d", c.MaxPositionEmbeddings, slots, maxContext)
	}
	d := &Decoder{dev: dev, c: c, weights: make(map[string]Buffer, len(m.Tensors)), slots: slots, maxCtx: maxContext,
		d: c.HiddenSize, nH: c.NumAttentionHeads, nKV: c.KVHeads(), hd: c.HeadDimension(), nI: c.IntermediateSize, nV: c.VocabSize,
		lens: make([]int, slots), seen: make([]bool, slots), acts: map[int]*decodeActs{}, sels: map[int]*selActs{}}
	d.alpha = float32(1 / math.Sqrt(float64(d.hd)))
	for _, name := range m.Names() {
		w := uploadWeight(dev, m.Tensors[name], true, dev.Alloc)
		d.owned = append(d.owned, w)
		d.weights[name] = w
	}
	// Every weight a product reads as B, packed once for the products.
	head := model.LMHeadName
	if c.TieWordEmbeddings {
		head = model.EmbedName
	}
	for _, name := range m.Names() {
		if sh := m.Tensors[name].Shape; len(sh) == 2 && (name == head || name != model.EmbedName) {
			dev.PackWeight(d.weights[name], sh[0], sh[1])
		}
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		d.names = append(d.names, namesOf(l))
		n := (slots + 1) * maxContext * d.nKV * d.hd
		d.kc, d.vc = append(d.kc, d.alloc(n)), append(d.vc, d.alloc(n))
	}
	cos, sin := ropeTables(&d.c, maxContext)
	d.cos, d.sin = d.alloc(len(cos)), d.alloc(len(sin))
	dev.Write(d.cos, 0, cos)
	dev.Write(d.sin, 0, sin)
	if err := dev.Sync(); err != nil {
		d.free()
		return nil, fmt.Errorf("engine: decoder on %s: %w", dev.Name(), err)
	}
	return d, nil
}

// Slots is the number of sequences the cache holds.
func (d *Decoder) Slots() int { return d.slots }

// MaxContext is the most positions a sequence may hold.
func (d *Decoder) MaxContext() int { return d.maxCtx }

// Len is the number of positions cached for slot.
func (d *Decoder) Len(slot int) int { return d.lens[slot] }

// Reset empties slot (its cache is overwritten as new tokens arrive).
func (d *Decoder) Reset(slot int) { d.lens[slot] = 0 }

func (d *Decoder) alloc(n int) Buffer {
	b := d.dev.Alloc(n)
	d.owned = append(d.owned, b)
	return b
}

// bucket rounds a row count up so that few distinct sizes are allocated:
// to a multiple of 8 above 32 (at most 7 padding rows, whose products are
// work thrown away).
func bucket(n int) int {
	if n <= 32 {
		return n
	}
	return (n + 7) &^ 7
}

// maxActs is how many sizes of activations a Decoder keeps; beyond it the
// least recently used goes.
const maxActs = 8

func (d *Decoder) actsFor(n int) *decodeActs {
	n = bucket(n)
	d.clock++
	if a := d.acts[n]; a != nil {
		a.used = d.clock
		return a
	}
	if len(d.acts) >= maxActs {
		old := 0
		for k, a := range d.acts {
			if old == 0 || a.used < d.acts[old].used {
				old = k
			}
		}
		d.acts[old].free(d.dev)
		delete(d.acts, old)
	}
	dev := d.dev
	H, KV, hd := d.nH, d.nKV, d.hd
	a := &decodeActs{n: n, ids: dev.AllocInt(n), pos: dev.AllocInt(n), cidx: dev.AllocInt(n), at: dev.AllocInt(2 * n),
		cos: dev.Alloc(n * hd), sin: dev.Alloc(n * hd),
		x: dev.Alloc(n * d.d), xMid: dev.Alloc(n * d.d), h: dev.Alloc(n * d.d), rstd: dev.Alloc(n),
		q: dev.Alloc(n * H * hd), att: dev.Alloc(n * H * hd), k: dev.Alloc(n * KV * hd), v: dev.Alloc(n * KV * hd),
		g: dev.Alloc(n * d.nI), u: dev.Alloc(n * d.nI), act: dev.Alloc(n * d.nI),
		ids32: make([]int32, n), pos32: make([]int32, n), cidx32: make([]int32, n), at32: make([]int32, 2*n)}
	a.used = d.clock
	d.acts[n] = a
	return a
}

func (a *decodeActs) free(dev Device) {
	for _, b := range []IntBuffer{a.ids, a.pos, a.cidx, a.at} {
		dev.FreeInt(b)
	}
	for _, b := range []Buffer{a.cos, a.sin, a.x, a.xMid, a.h, a.rstd, a.q, a.att, a.k, a.v, a.g, a.u, a.act} {
		dev.Free(b)
	}
}

func (d *Decoder) selFor(n int) *selActs {
	n = bucket(n)
	if s := d.sels[n]; s != nil {
		return s
	}
	if len(d.sels) >= 8 {
		for k, s := range d.sels {
			s.free(d.dev)
			delete(d.sels, k)
		}
	}
	dev := d.dev
	s := &selActs{n: n, sel: dev.AllocInt(n), xs: dev.Alloc(n * d.d), hs: dev.Alloc(n * d.d), rstd: dev.Alloc(n),
		logits: dev.Alloc(n * d.nV), sel32: make([]int32, n), host: make([]float32, n*d.nV)}
	d.sels[n] = s
	return s
}

func (s *selActs) free(dev Device) {
	dev.FreeInt(s.sel)
	for _, b := range []Buffer{s.xs, s.hs, s.rstd, s.logits} {
		dev.Free(b)
	}
}

// check validates chunks against the cache before anything runs.
func (d *Decoder) check(chunks []Chunk) (rows, want int, err error) {
	seen := d.seen
	defer clear(seen)
	for i, ch := range chunks {
		if ch.Slot < 0 || ch.Slot >= d.slots {
			return 0, 0, fmt.Errorf("%w: chunk %d: slot %d outside [0, %d)", ErrSlot, i, ch.Slot, d.slots)
		}
		if seen[ch.Slot] {
			return 0, 0, fmt.Errorf("%w: chunk %d: slot %d appears twice", ErrSlot, i, ch.Slot)
		}
		seen[ch.Slot] = true
		if len(ch.Tokens) == 0 {
			return 0, 0, fmt.Errorf("engine: decoder: chunk %d (slot %d) has no tokens", i, ch.Slot)
		}
		if n := d.lens[ch.Slot] + len(ch.Tokens); n > d.maxCtx {
			return 0, 0, fmt.Errorf("%w: slot %d would hold %d positions, the decoder's context is %d", model.ErrContextFull, ch.Slot, n, d.maxCtx)
		}
		for p, id := range ch.Tokens {
			if id < 0 || id >= d.nV {
				return 0, 0, fmt.Errorf("engine: decoder: chunk %d position %d: token %d outside the vocabulary [0, %d)", i, p, id, d.nV)
			}
		}
		rows += len(ch.Tokens)
		if ch.Logits {
			want++
		}
	}
	return rows, want, nil
}

// Forward appends each chunk's tokens to its slot's sequence, runs them
// through the model and returns the logits of the last token of each
// chunk that asks for them, [wanted, V] in chunk order. The slice is the
// decoder's and holds until the next call. A slot may appear in one chunk
// per call. On an error about the arguments nothing changes; on a device
// error the decoder is unusable.
func (d *Decoder) Forward(chunks []Chunk) ([]float32, error) {
	if d.err != nil {
		return nil, d.err
	}
	rows, want, err := d.check(chunks)
	if err != nil || rows == 0 {
		return nil, err
	}
	dev := d.dev
	a := d.actsFor(rows)
	var s *selActs
	if want > 0 {
		s = d.selFor(want)
	}
	// Host-side indices: token ids, positions, cache rows, attention spans.
	pad := d.slots * d.maxCtx
	r, k := 0, 0
	for _, ch := range chunks {
		base := ch.Slot * d.maxCtx
		p0 := d.lens[ch.Slot]
		for i, id := range ch.Tokens {
			p := p0 + i
			a.ids32[r], a.pos32[r], a.cidx32[r] = int32(id), int32(p), int32(base+p)
			a.at32[2*r], a.at32[2*r+1] = int32(base), int32(p)
			r++
		}
		if ch.Logits {
			s.sel32[k] = int32(r - 1)
			k++
		}
	}
	for ; r < a.n; r++ { // padding rows: token 0 at position 0 of the spare slot
		a.ids32[r], a.pos32[r], a.cidx32[r] = 0, 0, int32(pad)
		a.at32[2*r], a.at32[2*r+1] = int32(pad), 0
	}
	dev.WriteInt(a.ids, a.ids32)
	dev.WriteInt(a.pos, a.pos32)
	dev.WriteInt(a.cidx, a.cidx32)
	dev.WriteInt(a.at, a.at32)
	d.forward(a)
	var out []float32
	if s != nil {
		for ; k < s.n; k++ {
			s.sel32[k] = 0
		}
		dev.WriteInt(s.sel, s.sel32)
		d.logits(a, s)
		out = s.host[:want*d.nV]
		dev.Read(out, s.logits, 0)
	}
	if err := dev.Sync(); err != nil {
		d.err = fmt.Errorf("engine: decoder forward on %s: %w", dev.Name(), err)
		return nil, d.err
	}
	for _, ch := range chunks {
		d.lens[ch.Slot] += len(ch.Tokens)
	}
	return out, nil
}

// forward runs the uploaded rows through every layer, writing their keys
// and values into the cache, and leaves the last hidden state in a.x.
func (d *Decoder) forward(a *decodeActs) {
	dev := d.dev
	N, D, H, KV, hd, I := a.n, d.d, d.nH, d.nKV, d.hd, d.nI
	eps := float32(d.c.RMSNormEps)
	lin := func(y, x Buffer, name string, in, out int, beta float32) {
		dev.MatMul(Gemm{TransB: true, M: N, N: out, K: in, Alpha: 1, Beta: beta, A: x, B: d.weights[name], C: y})
	}
	dev.Embed(a.x, d.weights[model.EmbedName], a.ids, D)
	dev.Embed(a.cos, d.cos, a.pos, hd)
	dev.Embed(a.sin, d.sin, a.pos, hd)
	for l, nm := range d.names {
		dev.RMSNorm(a.h, a.rstd, a.x, d.weights[nm.inNorm], N, D, eps)
		lin(a.q, a.h, nm.q, D, H*hd, 0)
		lin(a.k, a.h, nm.k, D, KV*hd, 0)
		lin(a.v, a.h, nm.v, D, KV*hd, 0)
		dev.RoPE(a.q, a.cos, a.sin, N, H, hd, N, false)
		dev.RoPE(a.k, a.cos, a.sin, N, KV, hd, N, false)
		dev.ScatterRows(d.kc[l], a.k, a.cidx, KV*hd)
		dev.ScatterRows(d.vc[l], a.v, a.cidx, KV*hd)
		dev.CachedAttention(a.att, a.q, d.kc[l], d.vc[l], a.at, H, KV, hd, d.alpha)
		dev.Copy(a.xMid, a.x)
		lin(a.xMid, a.att, nm.o, H*hd, D, 1)
		dev.RMSNorm(a.h, a.rstd, a.xMid, d.weights[nm.postNorm], N, D, eps)
		lin(a.g, a.h, nm.gate, D, I, 0)
		lin(a.u, a.h, nm.up, D, I, 0)
		dev.SwiGLU(a.act, a.g, a.u)
		dev.Copy(a.x, a.xMid)
		lin(a.x, a.act, nm.down, I, D, 1)
	}
}

// logits gathers the selected rows of a.x and computes their logits.
func (d *Decoder) logits(a *decodeActs, s *selActs) {
	dev := d.dev
	dev.Embed(s.xs, a.x, s.sel, d.d)
	dev.RMSNorm(s.hs, s.rstd, s.xs, d.weights[model.FinalNormName], s.n, d.d, float32(d.c.RMSNormEps))
	head := d.weights[model.LMHeadName]
	if d.c.TieWordEmbeddings {
		head = d.weights[model.EmbedName]
	}
	dev.MatMul(Gemm{TransB: true, M: s.n, N: d.nV, K: d.d, Alpha: 1, A: s.hs, B: head, C: s.logits})
}

func (d *Decoder) free() {
	for _, a := range d.acts {
		a.free(d.dev)
	}
	for _, s := range d.sels {
		s.free(d.dev)
	}
	clear(d.acts)
	clear(d.sels)
	for _, b := range d.owned {
		d.dev.Free(b)
	}
	d.owned = nil
}

// Close frees the decoder's device buffers (not the device) and reports a
// device error still pending.
func (d *Decoder) Close() error {
	if d.err == errDecoderClosed {
		return nil
	}
	d.free()
	d.err = errDecoderClosed
	return d.dev.Sync()
}

// chunkOf is a helper for one sequence's chunk asking for its logits.
func chunkOf(slot int, tokens []int) []Chunk {
	return []Chunk{{Slot: slot, Tokens: slices.Clip(tokens), Logits: true}}
}
