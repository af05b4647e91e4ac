//go:build fedcuda || fedcudaemu

package cudadev

import "github.com/fedtune/fedtune/model/engine"

// The Device is an engine.CacheDevice: engine.Decoder and engine.Batcher
// (fedtune serve --device cuda) decode on it with a key/value cache.
var _ engine.CacheDevice = (*Device)(nil)

// maxAttnScratch bounds, in float32s, the scores CachedAttention keeps on
// the device at once ([rows, heads, longest span] of one launch): a
// longer batch runs in several launches of fewer rows.
const maxAttnScratch = 1 << 24

// ScatterRows implements engine.CacheDevice: dst[idx[r], :] = src[r, :].
// The indices are checked on the host (an index outside dst is the sticky
// error, and nothing runs); when one repeats, its last row is written.
func (d *Device) ScatterRows(dst, src engine.Buffer, idx engine.IntBuffer, dim int) {
	const op = "scatter rows"
	if !d.ok() {
		return
	}
	id := d.ibuf(op, "idx", idx, 0)
	t := d.buf(op, "dst", dst, 0)
	n := d.table(op, t, dim)
	if id == nil || n == 0 {
		return
	}
	rows := id.n
	s := d.exact(op, "src", src, rows*dim, "[rows, d]")
	if !d.noAlias(op, t, "dst", "src", s) || !d.fits32(op, max(t.n, rows*dim)) || !d.checkIDs(op, "index", id.host, n) || rows == 0 {
		return
	}
	grid, block := ewGrid(rows * dim)
	d.launch("train_scatter_rows", grid, block, t.p, s.p, id.p, int32(rows), int32(dim), int32(firstRepeated(id.host)))
}

// firstRepeated returns the first r whose ids[r] occurs again after it,
// len(ids) when no value repeats. (The Decoder's only repeats are its
// padding rows, at the end.)
func firstRepeated(ids []int32) int {
	if len(ids) < 2 {
		return len(ids)
	}
	last := make(map[int32]int, len(ids))
	for r, v := range ids {
		last[v] = r
	}
	for r, v := range ids {
		if last[v] != r {
			return r
		}
	}
	return len(ids)
}

// CachedAttention implements engine.CacheDevice with one block per query
// row and head (kernel train_cached_attention): the scores, their softmax
// (as CausalSoftmax computes it: max, expf, a float64 sum) and the
// weighted sum of the values, each in a fixed order. The spans in at are
// checked on the host against the cache, as the Host device checks them.
func (d *Device) CachedAttention(out, q, k, v engine.Buffer, at engine.IntBuffer, heads, kvHeads, hd int, scale float32) {
	const op = "cached attention"
	if !d.ok() || !d.positive(op, "heads", heads, "kvHeads", kvHeads, "hd", hd) {
		return
	}
	if heads%kvHeads != 0 {
		d.failf("%s: heads %d is not a multiple of kvHeads %d", op, heads, kvHeads)
		return
	}
	ab := d.ibuf(op, "at", at, 0)
	kb := d.buf(op, "k", k, 0)
	if ab == nil || kb == nil {
		return
	}
	if ab.n%2 != 0 {
		d.failf("%s: at has %d elements, not [rows, 2]", op, ab.n)
		return
	}
	rows, w := ab.n/2, kvHeads*hd
	qb := d.exact(op, "q", q, rows*heads*hd, "[rows, heads, hd]")
	ob := d.exact(op, "out", out, rows*heads*hd, "[rows, heads, hd]")
	vb := d.exact(op, "v", v, kb.n, "the length of k")
	if qb == nil || vb == nil || !d.noAlias(op, ob, "out", "q", qb, "k", kb, "v", vb) || !d.fits32(op, max(kb.n, rows*heads*hd)) {
		return
	}
	if kb.n%w != 0 {
		d.failf("%s: k has %d elements, not [cacheRows, kvHeads·hd = %d]", op, kb.n, w)
		return
	}
	cacheRows := kb.n / w
	long := 0
	for r := 0; r < rows; r++ {
		c, p := int(ab.host[2*r]), int(ab.host[2*r+1])
		if c < 0 || p < 0 || c+p >= cacheRows {
			d.failf("%s: row %d: cache row %d, position %d outside a cache of %d rows", op, r, c, p, cacheRows)
			return
		}
		long = max(long, p+1)
	}
	if rows == 0 {
		return
	}
	per := max(1, min(rows, maxAttnScratch/(heads*long))) // rows a launch
	scratch := d.attnScratch(per * heads * long)
	if scratch == 0 {
		return
	}
	_, block := rowGrid(1, max(long, hd), 256)
	for r0 := 0; r0 < rows; r0 += per {
		n := min(per, rows-r0)
		off := ptr(4 * r0 * heads * hd)
		grid := [3]int{min(n*heads, maxRowGrid), 1, 1}
		d.launch("train_cached_attention", grid, block, ob.p+off, qb.p+off, kb.p, vb.p, ab.p+ptr(4*2*r0), scratch,
			int32(n), int32(heads), int32(kvHeads), int32(hd), int32(long), scale)
	}
}

// attnScratch returns a device buffer of at least n float32s for
// CachedAttention's scores, kept between calls and grown as needed (0
// after an error).
func (d *Device) attnScratch(n int) ptr {
	if n <= d.scratchN {
		return d.scratch
	}
	if d.scratch != 0 {
		// The stream may still run a launch reading the old buffer.
		if err := d.sync(); err != nil {
			d.fail(err)
			return 0
		}
		d.fail(d.free(d.scratch))
		d.scratch, d.scratchN = 0, 0
	}
	p, err := d.alloc(4 * n)
	if err != nil {
		d.failf("cached attention: scratch of %d float32s: %v", n, err)
		return 0
	}
	d.scratch, d.scratchN = p, n
	return p
}

// PackWeight implements engine.CacheDevice. cuBLAS reads the row-major
// weight as it is (a transposed column-major operand), so there is no
// packed copy: it only checks its arguments as the Host does.
func (d *Device) PackWeight(w engine.Buffer, rows, cols int) {
	const op = "pack weight"
	if !d.ok() || !d.positive(op, "rows", rows, "cols", cols) {
		return
	}
	d.exact(op, "w", w, rows*cols, "[rows, cols]")
}
