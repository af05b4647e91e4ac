package engine

// CacheDevice is a Device that also runs the two operations of decoding
// with a key/value cache (Decoder, Batcher). The Host implements it; a
// Device that does not is served by Generate's full-recompute path.
type CacheDevice interface {
	Device

	// ScatterRows is Embed's inverse: dst[idx[r], :] = src[r, :] for
	// r < idx.Len(), dst being [n, d] and src [idx.Len(), d]. An index
	// outside [0, n) is an error; when an index repeats, one of its rows
	// is written.
	ScatterRows(dst, src Buffer, idx IntBuffer, d int)

	// CachedAttention attends each query row to its sequence's cached keys
	// and values. q and out are [rows, heads, hd]; k and v are the cache,
	// [cacheRows, kvHeads, hd]; at is [rows, 2]: at[r, 0] is the cache row
	// of position 0 of row r's sequence and at[r, 1] is row r's position
	// p. With g = h / (heads/kvHeads) and c = at[r, 0]:
	//
	//	s_j          = scale·q[r, h, :]·k[c+j, g, :]   for j ≤ p
	//	out[r, h, :] = Σ_{j ≤ p} softmax(s)_j · v[c+j, g, :]
	//
	// (the softmax as CausalSoftmax computes it). heads must be a multiple
	// of kvHeads, and c+p a row of the cache.
	CachedAttention(out, q, k, v Buffer, at IntBuffer, heads, kvHeads, hd int, scale float32)

	// PackWeight says that w, a [rows, cols] matrix, is a weight that
	// later MatMuls read as B with TransB (N = rows, K = cols) and that it
	// will not change: the device may keep a copy in a layout those
	// products read faster, giving the same results. Write, Zero, Copy
	// and AdamW into w drop the copy; w must not change otherwise.
	PackWeight(w Buffer, rows, cols int)
}

var _ CacheDevice = (*host)(nil)

func (h *host) PackWeight(w Buffer, rows, cols int) {
	const op = "PackWeight"
	if !h.ok(op) {
		return
	}
	if _, bf := h.bufBF(op, "w", w); bf != nil {
		// No packed copy of bfloat16 weights (it would double their
		// memory): the products widen them as they pack them, and run
		// short rows as they would on a packed float32 copy.
		if !h.positive(op, "rows, cols", rows, cols) {
			return
		}
		if len(bf) != rows*cols {
			h.fail(op, "w has %d elements, want %d ([rows, cols])", len(bf), rows*cols)
			return
		}
		hb := w.(*hostBuf)
		hb.rowKern, hb.pn, hb.pk = true, rows, cols
		return
	}
	wb := h.buf(op, "w", w)
	if !h.positive(op, "rows, cols", rows, cols) || !h.wantLen(op, "w", wb, rows*cols, "[rows, cols]") {
		return
	}
	if impl, _ := h.gemm(); impl.blas != nil {
		return // only the Host's own sgemm reads packed weights
	}
	hb := w.(*hostBuf)
	hb.packed, hb.pn, hb.pk = packWeight(wb, rows, cols), rows, cols
}

func (h *host) ScatterRows(dst, src Buffer, idx IntBuffer, d int) {
	const op = "ScatterRows"
	if !h.ok(op) {
		return
	}
	db, sb, id := h.buf(op, "dst", dst), h.buf(op, "src", src), h.ibuf(op, "idx", idx)
	n := h.table(op, db, d)
	if !h.wantLen(op, "src", sb, len(id)*d, "[rows, d]") || !h.noAlias(op, db, "dst", map[string][]float32{"src": sb}) {
		return
	}
	if !h.inRange(op, "index", id, n) {
		return
	}
	for r, v := range id {
		copy(db[int(v)*d:(int(v)+1)*d], sb[r*d:(r+1)*d])
	}
}

func (h *host) CachedAttention(out, q, k, v Buffer, at IntBuffer, heads, kvHeads, hd int, scale float32) {
	const op = "CachedAttention"
	if !h.ok(op) {
		return
	}
	ob, qb, kb, vb, ab := h.buf(op, "out", out), h.buf(op, "q", q), h.buf(op, "k", k), h.buf(op, "v", v), h.ibuf(op, "at", at)
	if !h.positive(op, "heads, kvHeads, hd", heads, kvHeads, hd) {
		return
	}
	if heads%kvHeads != 0 {
		h.fail(op, "heads %d is not a multiple of kvHeads %d", heads, kvHeads)
		return
	}
	if len(ab)%2 != 0 {
		h.fail(op, "at has %d elements, not [rows, 2]", len(ab))
		return
	}
	rows, w := len(ab)/2, kvHeads*hd
	if !h.wantLen(op, "q", qb, rows*heads*hd, "[rows, heads, hd]") || !h.wantLen(op, "out", ob, rows*heads*hd, "[rows, heads, hd]") ||
		!h.wantLen(op, "v", vb, len(kb), "the length of k") ||
		!h.noAlias(op, ob, "out", map[string][]float32{"q": qb, "k": kb, "v": vb}) {
		return
	}
	if len(kb)%w != 0 {
		h.fail(op, "k has %d elements, not [cacheRows, kvHeads·hd = %d]", len(kb), w)
		return
	}
	cacheRows := len(kb) / w
	long := 0
	for r := 0; r < rows; r++ {
		c, p := int(ab[2*r]), int(ab[2*r+1])
		if c < 0 || p < 0 || c+p >= cacheRows {
			h.fail(op, "row %d: cache row %d, position %d outside a cache of %d rows", r, c, p, cacheRows)
			return
		}
		long = max(long, p+1)
	}
	t := &h.tasks.attention
	*t = attentionTask{ob: ob, qb: qb, kb: kb, vb: vb, ab: ab, heads: heads, kvHeads: kvHeads, hd: hd, scale: scale, scratch: t.scratch}
	for len(t.scratch) < 4*h.procs+1 {
		t.scratch = append(t.scratch, nil)
	}
	h.parallel(rows*kvHeads, (heads/kvHeads)*long*hd*2, t)
	*t = attentionTask{scratch: t.scratch}
}

// attentionTask is CachedAttention over (row, kv head) units [lo, hi):
// the heads/kvHeads query heads of a group share one pass over its keys
// and values.
type attentionTask struct {
	ob, qb, kb, vb     []float32
	ab                 []int32
	heads, kvHeads, hd int
	scale              float32
	scratch            [][]float32 // per participant slot: scores
}

func (t *attentionTask) Run(slot, lo, hi int) {
	heads, kvHeads, hd := t.heads, t.kvHeads, t.hd
	rep, w := heads/kvHeads, kvHeads*hd
	for u := lo; u < hi; u++ {
		r, g := u/kvHeads, u%kvHeads
		c, n := int(t.ab[2*r]), int(t.ab[2*r+1])+1
		if cap(t.scratch[slot]) < n {
			t.scratch[slot] = make([]float32, n)
		}
		s := t.scratch[slot][:n]
		for hh := g * rep; hh < (g+1)*rep; hh++ {
			qv := t.qb[(r*heads+hh)*hd : (r*heads+hh+1)*hd]
			o := t.ob[(r*heads+hh)*hd : (r*heads+hh+1)*hd]
			if !attnScoresVec(s, qv, t.kb[c*w+g*hd:], w, t.scale) {
				for j := range s {
					kv := t.kb[(c+j)*w+g*hd : (c+j)*w+(g+1)*hd]
					k, dot := dotVec(qv, kv)
					for i := k; i < hd; i++ {
						dot += qv[i] * kv[i]
					}
					s[j] = t.scale * dot
				}
			}
			m := rowMax(s)
			k, z := expSum(s, s, m)
			for j := k; j < n; j++ {
				e := expf(s[j] - m)
				z += float64(e)
				s[j] = e
			}
			inv := float32(1 / z)
			if attnValuesVec(o, t.vb[c*w+g*hd:], w, s, inv) {
				continue
			}
			clear(o)
			for j, p := range s {
				p *= inv
				vv := t.vb[(c+j)*w+g*hd : (c+j)*w+(g+1)*hd]
				vv = vv[:len(o)]
				for i := axpyVec(o, vv, p); i < len(o); i++ {
					o[i] += p * vv[i]
				}
			}
		}
	}
}
