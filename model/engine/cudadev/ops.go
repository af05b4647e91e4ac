//go:build fedcuda || fedcudaemu

package cudadev

import (
	"fmt"
	"unsafe"

	"github.com/fedtune/fedtune/model/engine"
)

// ewGrid is the launch shape of an element-wise kernel over n elements.
func ewGrid(n int) (grid, block [3]int) {
	blocks := min((n+ewThreads-1)/ewThreads, ewMaxBlocks)
	return [3]int{max(blocks, 1), 1, 1}, [3]int{ewThreads, 1, 1}
}

// rowGrid is the launch shape of a one-block-per-row kernel whose rows
// have width elements: a multiple of 32 threads, at most maxThreads.
func rowGrid(rows, width, maxThreads int) (grid, block [3]int) {
	t := min(max((width+31)/32*32, 32), maxThreads)
	return [3]int{min(rows, maxRowGrid), 1, 1}, [3]int{t, 1, 1}
}

// launch runs kernel name unless an error is pending.
func (d *Device) launch(name string, grid, block [3]int, args ...any) {
	if d.err != nil {
		return
	}
	if err := d.launchKernel(name, grid, block, args...); err != nil {
		d.fail(fmt.Errorf("cudadev: %s: %w", name, err))
	}
}

// span is the number of elements a row-major matrix of rows×cols with row
// stride ld occupies.
func span(rows, cols, ld int) int {
	if rows == 0 || cols == 0 {
		return 0
	}
	return (rows-1)*ld + cols
}

// MatMul implements engine.Device. A row-major matrix with row stride ld is
// the column-major matrix of its transpose with leading dimension ld, so
// C = op(A)·op(B) (row-major) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ
// (column-major): cuBLAS gets B first and A second, with their own
// transpose flags, and m = N, n = M.
func (d *Device) MatMul(g engine.Gemm) {
	const op = "matmul"
	if !d.ok() {
		return
	}
	a, b, c := d.buf(op, "A", g.A, 0), d.buf(op, "B", g.B, 0), d.buf(op, "C", g.C, 0)
	if a == nil || b == nil || c == nil {
		return
	}
	l, err := g.Layout()
	if err != nil {
		d.failf("%s: %v", op, err)
		return
	}
	for _, x := range []struct {
		name string
		b    *buffer
		need int
	}{{"A", a, l.NeedA}, {"B", b, l.NeedB}, {"C", c, l.NeedC}} {
		if x.need > x.b.n {
			d.failf("%s: %s has %d elements, the product needs %d", op, x.name, x.b.n, x.need)
			return
		}
	}
	batch, lda, ldb, ldc := l.Batch, l.LDA, l.LDB, l.LDC
	if c.n > 0 && (c == a || c == b) {
		d.failf("%s: C must not alias A or B", op)
		return
	}
	if g.M == 0 || g.N == 0 {
		return
	}
	if !d.fits32(op, max(a.n, b.n, c.n)) {
		return
	}
	if g.K == 0 && g.Beta == 0 { // C = 0 (cuBLAS would too; kept explicit)
		for i := 0; i < batch; i++ {
			for r := 0; r < g.M; r++ {
				d.memset(c.p+ptr(4*(i*g.StrideC+r*ldc)), 4*g.N)
			}
		}
		return
	}
	// cuBLAS wants every leading dimension ≥ 1, even of an empty operand
	// (K = 0, where C is only scaled by beta).
	lda, ldb = max(lda, 1), max(ldb, 1)
	switch {
	case batch == 1:
		err = d.sgemm(g.TransB, g.TransA, g.N, g.M, g.K, g.Alpha, b.p, ldb, a.p, lda, g.Beta, c.p, ldc)
	case g.StrideC < span(g.M, g.N, ldc):
		// Outputs overlap: one product after another, in batch order, as
		// the Host device does.
		for i := 0; i < batch && err == nil; i++ {
			err = d.sgemm(g.TransB, g.TransA, g.N, g.M, g.K, g.Alpha, b.p+ptr(4*i*g.StrideB), ldb,
				a.p+ptr(4*i*g.StrideA), lda, g.Beta, c.p+ptr(4*i*g.StrideC), ldc)
		}
	default:
		err = d.sgemmStridedBatched(g.TransB, g.TransA, g.N, g.M, g.K, g.Alpha, b.p, ldb, g.StrideB,
			a.p, lda, g.StrideA, g.Beta, c.p, ldc, g.StrideC, batch)
	}
	if err != nil {
		d.fail(fmt.Errorf("cudadev: matmul %dx%dx%d (batch %d): %w", g.M, g.N, g.K, batch, err))
	}
}

// checkIDs records an error unless every id is in [0, v).
func (d *Device) checkIDs(op, what string, ids []int32, v int) bool {
	for r, id := range ids {
		if id < 0 || int(id) >= v {
			d.failf("%s: row %d: %s %d outside [0, %d)", op, r, what, id, v)
			return false
		}
	}
	return d.err == nil
}

// table checks an embedding table [V, d] and returns V.
func (d *Device) table(op string, t *buffer, dim int) int {
	if t == nil || !d.positive(op, "d", dim) {
		return 0
	}
	if t.n == 0 || t.n%dim != 0 {
		d.failf("%s: table has %d elements, not a positive multiple of d = %d", op, t.n, dim)
		return 0
	}
	return t.n / dim
}

// Embed implements engine.Device.
func (d *Device) Embed(out, table engine.Buffer, ids engine.IntBuffer, dim int) {
	const op = "embed"
	if !d.ok() {
		return
	}
	id := d.ibuf(op, "ids", ids, 0)
	t := d.buf(op, "table", table, 0)
	V := d.table(op, t, dim)
	if id == nil || V == 0 {
		return
	}
	rows := id.n
	o := d.exact(op, "out", out, rows*dim, "[rows, d]")
	if !d.noAlias(op, o, "out", "table", t) || !d.fits32(op, rows*dim) || !d.checkIDs(op, "id", id.host, V) || rows == 0 {
		return
	}
	grid, block := ewGrid(rows * dim)
	d.launch("train_embed", grid, block, o.p, t.p, id.p, int32(rows), int32(dim))
}

// EmbedBackward implements engine.Device.
func (d *Device) EmbedBackward(gtable, gout engine.Buffer, ids engine.IntBuffer, dim int) {
	const op = "embed backward"
	if !d.ok() {
		return
	}
	id := d.ibuf(op, "ids", ids, 0)
	t := d.buf(op, "gtable", gtable, 0)
	V := d.table(op, t, dim)
	if id == nil || V == 0 {
		return
	}
	rows := id.n
	o := d.exact(op, "gout", gout, rows*dim, "[rows, d]")
	if !d.noAlias(op, t, "gtable", "gout", o) || !d.fits32(op, t.n) || !d.checkIDs(op, "id", id.host, V) || rows == 0 {
		return
	}
	d.launch("train_embed_backward", [3]int{(dim + 127) / 128, 1, 1}, [3]int{128, 1, 1}, t.p, o.p, id.p, int32(rows), int32(dim))
}

// RMSNorm implements engine.Device.
func (d *Device) RMSNorm(y, rstd, x, w engine.Buffer, rows, dim int, eps float32) {
	const op = "rmsnorm"
	if !d.ok() || !d.positive(op, "rows", rows, "d", dim) || !d.fits32(op, rows*dim) {
		return
	}
	yb := d.exact(op, "y", y, rows*dim, "[rows, d]")
	rb := d.exact(op, "rstd", rstd, rows, "[rows]")
	xb := d.exact(op, "x", x, rows*dim, "[rows, d]")
	wb := d.exact(op, "w", w, dim, "[d]")
	if !d.noAlias(op, yb, "y", "x", xb, "w", wb, "rstd", rb) || !d.noAlias(op, rb, "rstd", "x", xb, "w", wb) {
		return
	}
	grid, block := rowGrid(rows, dim, 256)
	d.launch("train_rmsnorm", grid, block, yb.p, rb.p, xb.p, wb.p, int32(rows), int32(dim), eps)
}

// RMSNormBackward implements engine.Device.
func (d *Device) RMSNormBackward(dx, dw, dy, x, w, rstd engine.Buffer, rows, dim int) {
	const op = "rmsnorm backward"
	if !d.ok() {
		return
	}
	var dwb *buffer
	if dw != nil {
		dwb = d.exact(op, "dw", dw, dim, "[d]")
	}
	if !d.positive(op, "rows", rows, "d", dim) || !d.fits32(op, rows*dim) {
		return
	}
	dxb := d.exact(op, "dx", dx, rows*dim, "[rows, d]")
	dyb := d.exact(op, "dy", dy, rows*dim, "[rows, d]")
	xb := d.exact(op, "x", x, rows*dim, "[rows, d]")
	wb := d.exact(op, "w", w, dim, "[d]")
	rb := d.exact(op, "rstd", rstd, rows, "[rows]")
	ins := []any{"dy", dyb, "x", xb, "w", wb, "rstd", rb}
	if !d.noAlias(op, dxb, "dx", ins...) || (dwb != nil && !d.noAlias(op, dwb, "dw", ins...)) {
		return
	}
	grid, block := rowGrid(rows, dim, 256)
	d.launch("train_rmsnorm_backward_dx", grid, block, dxb.p, dyb.p, xb.p, wb.p, rb.p, int32(rows), int32(dim))
	if dwb != nil {
		d.launch("train_rmsnorm_backward_dw", [3]int{(dim + 31) / 32, 1, 1}, [3]int{32 * dwSlices, 1, 1},
			dwb.p, dyb.p, xb.p, rb.p, int32(rows), int32(dim))
	}
}

// RoPE implements engine.Device.
func (d *Device) RoPE(x, cos, sin engine.Buffer, rows, heads, hd, T int, inverse bool) {
	const op = "rope"
	if !d.ok() || !d.positive(op, "rows", rows, "heads", heads, "hd", hd, "T", T) || !d.fits32(op, rows*heads*hd) {
		return
	}
	if hd%2 != 0 {
		d.failf("%s: head dimension %d is odd", op, hd)
		return
	}
	xb := d.exact(op, "x", x, rows*heads*hd, "[rows, heads, hd]")
	cb := d.exact(op, "cos", cos, T*hd, "[T, hd]")
	sb := d.exact(op, "sin", sin, T*hd, "[T, hd]")
	if !d.noAlias(op, xb, "x", "cos", cb, "sin", sb) {
		return
	}
	sign := float32(1)
	if inverse {
		sign = -1
	}
	grid, block := ewGrid(rows * heads * hd / 2)
	d.launch("train_rope", grid, block, xb.p, cb.p, sb.p, int32(rows), int32(heads), int32(hd), int32(T), sign)
}

// heads checks the buffers of SplitHeads (splitting) or MergeHeads.
func (d *Device) heads(op string, dst, src engine.Buffer, B, T, heads, hd, repeat int, splitting bool) (t, s *buffer) {
	if !d.ok() || !d.positive(op, "B", B, "T", T, "heads", heads, "hd", hd, "repeat", repeat) ||
		!d.fits32(op, B*T*heads*repeat*hd) {
		return nil, nil
	}
	small, big := B*T*heads*hd, B*T*heads*repeat*hd
	if splitting {
		s = d.exact(op, "src", src, small, "[B, T, heads, hd]")
		t = d.exact(op, "dst", dst, big, "[B, heads·repeat, T, hd]")
	} else {
		s = d.exact(op, "src", src, big, "[B, heads·repeat, T, hd]")
		t = d.exact(op, "dst", dst, small, "[B, T, heads, hd]")
	}
	if !d.noAlias(op, t, "dst", "src", s) {
		return nil, nil
	}
	return t, s
}

// SplitHeads implements engine.Device.
func (d *Device) SplitHeads(dst, src engine.Buffer, B, T, heads, hd, repeat int) {
	t, s := d.heads("split heads", dst, src, B, T, heads, hd, repeat, true)
	if t == nil {
		return
	}
	grid, block := ewGrid(t.n)
	d.launch("train_split_heads", grid, block, t.p, s.p, int32(B), int32(T), int32(heads), int32(hd), int32(repeat))
}

// MergeHeads implements engine.Device.
func (d *Device) MergeHeads(dst, src engine.Buffer, B, T, heads, hd, repeat int) {
	t, s := d.heads("merge heads", dst, src, B, T, heads, hd, repeat, false)
	if t == nil {
		return
	}
	grid, block := ewGrid(t.n)
	d.launch("train_merge_heads", grid, block, t.p, s.p, int32(B), int32(T), int32(heads), int32(hd), int32(repeat))
}

// CausalSoftmax implements engine.Device.
func (d *Device) CausalSoftmax(p, s engine.Buffer, rows, T int) {
	const op = "causal softmax"
	if !d.ok() || !d.positive(op, "rows", rows, "T", T) || !d.fits32(op, rows*T) {
		return
	}
	sb := d.exact(op, "s", s, rows*T, "[rows, T]")
	pb := d.exact(op, "p", p, rows*T, "[rows, T]")
	if sb == nil || pb == nil {
		return
	}
	grid, block := rowGrid(rows, T, 256)
	d.launch("train_causal_softmax", grid, block, pb.p, sb.p, int32(rows), int32(T))
}

// CausalSoftmaxBackward implements engine.Device.
func (d *Device) CausalSoftmaxBackward(ds, p, dp engine.Buffer, rows, T int) {
	const op = "causal softmax backward"
	if !d.ok() || !d.positive(op, "rows", rows, "T", T) || !d.fits32(op, rows*T) {
		return
	}
	pb := d.exact(op, "p", p, rows*T, "[rows, T]")
	dpb := d.exact(op, "dp", dp, rows*T, "[rows, T]")
	dsb := d.exact(op, "ds", ds, rows*T, "[rows, T]")
	if dpb == nil || !d.noAlias(op, dsb, "ds", "p", pb) {
		return
	}
	grid, block := rowGrid(rows, T, 256)
	d.launch("train_causal_softmax_backward", grid, block, dsb.p, pb.p, dpb.p, int32(rows), int32(T))
}

// same returns the buffers of an element-wise op, all of the length of
// the one named ref.
func (d *Device) same(op string, ref int, names []string, bs ...engine.Buffer) ([]*buffer, int) {
	if !d.ok() {
		return nil, 0
	}
	r := d.buf(op, names[ref], bs[ref], 0)
	if r == nil {
		return nil, 0
	}
	out := make([]*buffer, len(bs))
	for i := range bs {
		if out[i] = d.exact(op, names[i], bs[i], r.n, "the length of "+names[ref]); out[i] == nil {
			return nil, 0
		}
	}
	if !d.fits32(op, r.n) {
		return nil, 0
	}
	return out, r.n
}

// SwiGLU implements engine.Device.
func (d *Device) SwiGLU(act, g, u engine.Buffer) {
	bs, n := d.same("swiglu", 1, []string{"act", "g", "u"}, act, g, u)
	if bs == nil || !d.noAlias("swiglu", bs[0], "act", "g", bs[1], "u", bs[2]) || n == 0 {
		return
	}
	grid, block := ewGrid(n)
	d.launch("train_swiglu", grid, block, bs[0].p, bs[1].p, bs[2].p, int32(n))
}

// SwiGLUBackward implements engine.Device.
func (d *Device) SwiGLUBackward(dg, du, dact, g, u engine.Buffer) {
	const op = "swiglu backward"
	bs, n := d.same(op, 3, []string{"dg", "du", "dact", "g", "u"}, dg, du, dact, g, u)
	if bs == nil {
		return
	}
	ins := []any{"dact", bs[2], "g", bs[3], "u", bs[4]}
	if !d.noAlias(op, bs[0], "dg", ins...) || !d.noAlias(op, bs[1], "du", ins...) || !d.noAlias(op, bs[0], "dg", "du", bs[1]) || n == 0 {
		return
	}
	grid, block := ewGrid(n)
	d.launch("train_swiglu_backward", grid, block, bs[0].p, bs[1].p, bs[2].p, bs[3].p, bs[4].p, int32(n))
}

// Mul implements engine.Device.
func (d *Device) Mul(dst, a, b engine.Buffer) {
	bs, n := d.same("mul", 1, []string{"dst", "a", "b"}, dst, a, b)
	if bs == nil || n == 0 {
		return
	}
	grid, block := ewGrid(n)
	d.launch("train_mul", grid, block, bs[0].p, bs[1].p, bs[2].p, int32(n))
}

// Axpy implements engine.Device.
func (d *Device) Axpy(y engine.Buffer, alpha float32, x engine.Buffer) {
	bs, n := d.same("axpy", 1, []string{"y", "x"}, y, x)
	if bs == nil || !d.noAlias("axpy", bs[0], "y", "x", bs[1]) || n == 0 {
		return
	}
	grid, block := ewGrid(n)
	d.launch("train_axpy", grid, block, bs[0].p, alpha, bs[1].p, int32(n))
}

// CrossEntropy implements engine.Device.
func (d *Device) CrossEntropy(loss, dlogits, logits engine.Buffer, targets engine.IntBuffer, rows, V int, scale float32) {
	const op = "cross entropy"
	if !d.ok() || !d.positive(op, "rows", rows, "V", V) || !d.fits32(op, rows*V) {
		return
	}
	lb := d.exact(op, "loss", loss, rows, "[rows]")
	db := d.exact(op, "dlogits", dlogits, rows*V, "[rows, V]")
	xb := d.exact(op, "logits", logits, rows*V, "[rows, V]")
	if !d.noAlias(op, lb, "loss", "logits", xb, "dlogits", db) {
		return
	}
	tb := d.ibuf(op, "targets", targets, 0)
	if tb == nil {
		return
	}
	if tb.n != rows {
		d.failf("%s: targets has %d elements, want rows = %d", op, tb.n, rows)
		return
	}
	if !d.checkIDs(op, "target", tb.host, V) {
		return
	}
	grid, block := rowGrid(rows, V, 512)
	d.launch("train_cross_entropy", grid, block, lb.p, db.p, xb.p, tb.p, int32(rows), int32(V), scale)
}

// SquaredNorm implements engine.Device.
func (d *Device) SquaredNorm(x engine.Buffer) float64 {
	if !d.ok() {
		return 0
	}
	b := d.buf("squared norm", "x", x, 0)
	if b == nil || !d.fits32("squared norm", b.n) {
		return 0
	}
	if b.n == 0 {
		return 0
	}
	d.launch("train_sqnorm_partial", [3]int{sqnBlocks, 1, 1}, [3]int{sqnThreads, 1, 1}, d.sqn+ptr(8), b.p, int32(b.n))
	d.launch("train_sqnorm_final", [3]int{1, 1, 1}, [3]int{sqnThreads, 1, 1}, d.sqn, d.sqn+ptr(8), int32(sqnBlocks))
	if d.err != nil {
		return 0
	}
	var out float64
	if err := d.dtoh(unsafe.Pointer(&out), d.sqn, 8); err != nil {
		d.fail(err)
		return 0
	}
	return out
}

// AdamW implements engine.Device.
func (d *Device) AdamW(w, g, m, v engine.Buffer, p engine.AdamW) {
	bs, n := d.same("adamw", 0, []string{"w", "g", "m", "v"}, w, g, m, v)
	if bs == nil {
		return
	}
	for i := range bs {
		for j := i + 1; j < len(bs); j++ {
			if bs[i] == bs[j] && n > 0 {
				d.failf("adamw: w, g, m and v must be four distinct buffers")
				return
			}
		}
	}
	if n == 0 {
		return
	}
	decay := int32(0)
	if p.Decay {
		decay = 1
	}
	grid, block := ewGrid(n)
	d.launch("train_adamw", grid, block, bs[0].p, bs[1].p, bs[2].p, bs[3].p, int32(n),
		p.Clip, p.LR, p.Beta1, p.Beta2, p.BC1, p.BC2, p.Eps, decay, p.WeightDecay)
}
