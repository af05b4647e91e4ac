package engine

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/fedtune/fedtune/kernels"
)

// ErrDevice is wrapped by every error a Device records about its arguments
// (bad lengths, foreign or freed buffers, ids outside the vocabulary).
var ErrDevice = errors.New("engine: bad device operation")

// hostSlice is a Host buffer: hostBuf (float32, a Buffer) or hostInt
// (int32, an IntBuffer).
type hostSlice[T float32 | int32] struct {
	owner *host
	data  []T
	freed bool
	// packed is data [pn, pk] in packWeight's layout (PackWeight), or nil.
	packed []float32
	pn, pk int
	// bf holds a WrapBF16 buffer's values (data is nil): read in place,
	// never written. rowKern, set by PackWeight, makes the products that
	// read it as a packed weight (pn, pk) run their short rows as
	// sgemmPacked does.
	bf      []uint16
	rowKern bool
}

func (b *hostSlice[T]) Len() int { return len(b.data) + len(b.bf) }

type (
	hostBuf = hostSlice[float32]
	hostInt = hostSlice[int32]
)

// host is the plain-Go reference Device.
type host struct {
	err    error
	closed bool
	bufs   map[*hostBuf]struct{}
	ints   map[*hostInt]struct{}
	procs  int
	tasks  hostTasks
	job    kernels.Job // the worker pool's job for this device's loops
}

// NewHost returns the plain-Go Device: buffers are Go slices; GEMM goes
// through OpenBLAS with the openblas build tag (made single-threaded,
// process-wide: see host_openblas.go), else through the Host's own
// AVX-512, AVX2 or pure-Go micro-kernels (gemm.go, lanes.go); the
// exp-heavy and row operations have AVX2 loops (vexp_amd64.s,
// vec_amd64.s) beside pure-Go twins that give the same bits (build tag
// purego or FEDTUNE_ENGINE_ISA=generic forces those; a bad
// FEDTUNE_ENGINE_ISA makes the Host fail with an error Sync reports). Large products and loops are spread over the CPU cores
// (GOMAXPROCS when the Host is made) by a process-wide worker pool, always
// over independent outputs, so results do not depend on the core count. It
// never panics on bad arguments: it records a sticky error wrapping
// ErrDevice that Sync reports.
func NewHost() Device {
	if hostBLAS.setup != nil {
		hostBLAS.setup()
	}
	h := &host{bufs: map[*hostBuf]struct{}{}, ints: map[*hostInt]struct{}{}, procs: runtime.GOMAXPROCS(0)}
	if isaErr != nil {
		h.err = fmt.Errorf("%w: NewHost: %w", ErrDevice, isaErr)
	}
	return h
}

func (h *host) Name() string { return "host" }

// fail records the first error.
func (h *host) fail(op, format string, args ...any) {
	if h.err == nil {
		h.err = fmt.Errorf("%w: %s: %s", ErrDevice, op, fmt.Sprintf(format, args...))
	}
}

// ok reports whether op may run (no pending error, device open).
func (h *host) ok(op string) bool {
	if h.err != nil {
		return false
	}
	if h.closed {
		h.fail(op, "device is closed")
		return false
	}
	return true
}

// buf resolves a Buffer argument; nil, foreign and freed buffers are errors.
func (h *host) buf(op, arg string, b Buffer) []float32 { return hostData[float32](h, op, arg, b) }

// ibuf resolves an IntBuffer argument as buf does.
func (h *host) ibuf(op, arg string, b IntBuffer) []int32 { return hostData[int32](h, op, arg, b) }

// bufBF resolves a Buffer argument that may hold bfloat16 weights
// (WrapBF16): it returns the buffer's float32 data, or its bfloat16 values.
func (h *host) bufBF(op, arg string, b Buffer) ([]float32, []uint16) {
	if hb, ok := b.(*hostBuf); ok && hb != nil && hb.owner == h && !hb.freed && hb.bf != nil {
		if h.err != nil {
			return nil, nil
		}
		return nil, hb.bf
	}
	return h.buf(op, arg, b), nil
}

// hostData returns the data of b, which must be a live *hostSlice[T] of h.
func hostData[T float32 | int32](h *host, op, arg string, b any) []T {
	if h.err != nil {
		return nil
	}
	hb, isHost := b.(*hostSlice[T])
	switch {
	case b == nil || (isHost && hb == nil):
		h.fail(op, "%s is nil", arg)
	case !isHost || hb.owner != h:
		h.fail(op, "%s was not allocated by this host device", arg)
	case hb.freed:
		h.fail(op, "%s was freed", arg)
	case hb.bf != nil:
		h.fail(op, "%s holds bfloat16 weights (WrapBF16), which only MatMul's B, Embed's table and Read may read", arg)
	default:
		return hb.data
	}
	return nil
}

// unpack drops b's packed copy (b is about to change).
func unpack(b Buffer) {
	if hb, ok := b.(*hostBuf); ok && hb != nil {
		hb.packed = nil
	}
}

// wantLen records an error unless len(x) == n.
func (h *host) wantLen(op, arg string, x []float32, n int, shape string) bool {
	if h.err != nil {
		return false
	}
	if len(x) != n {
		h.fail(op, "%s has %d elements, want %d (%s)", arg, len(x), n, shape)
		return false
	}
	return true
}

func (h *host) positive(op string, names string, vals ...int) bool {
	if h.err != nil {
		return false
	}
	for _, v := range vals {
		if v <= 0 {
			// A copy: vals itself must not escape (the call would
			// allocate it on every operation).
			h.fail(op, "%s must be positive, got %v", names, slices.Clone(vals))
			return false
		}
	}
	return true
}

// same reports whether two slices share their first element (aliasing).
func same(a, b []float32) bool {
	return len(a) > 0 && len(b) > 0 && &a[0] == &b[0]
}

func (h *host) noAlias(op string, out []float32, outName string, ins map[string][]float32) bool {
	if h.err != nil {
		return false
	}
	for name, in := range ins {
		if same(out, in) {
			h.fail(op, "%s must not alias %s", outName, name)
			return false
		}
	}
	return true
}

// parallel runs task over [0, n), in contiguous chunks on the worker pool
// when the work (n·cost) is large enough to pay for the hand-off.
func (h *host) parallel(n, cost int, task kernels.Task) {
	if n*cost < 1<<15 || h.procs < 2 || n < 2 {
		task.Run(0, 0, n)
		return
	}
	// A few chunks per core balance the load when other processes hold a
	// core for a while.
	parallelFor(&h.job, n, min(4*h.procs, n*cost>>14), task)
}

func (h *host) Alloc(n int) Buffer { return hostAlloc(h, "Alloc", n, h.bufs) }

var _ BF16Device = (*host)(nil)

// WrapBF16 keeps w itself as the buffer's values: no copy is made.
func (h *host) WrapBF16(w []uint16) Buffer {
	b := &hostBuf{owner: h}
	if !h.ok("WrapBF16") {
		return b
	}
	if len(w) == 0 {
		h.fail("WrapBF16", "no values")
		return b
	}
	b.bf = w
	h.bufs[b] = struct{}{}
	return b
}

func (h *host) AllocInt(n int) IntBuffer { return hostAlloc(h, "AllocInt", n, h.ints) }

func (h *host) Free(b Buffer) {
	if b != nil {
		hostFree(h, "Free", b, h.bufs)
	}
}

func (h *host) FreeInt(b IntBuffer) {
	if b != nil {
		hostFree(h, "FreeInt", b, h.ints)
	}
}

// hostAlloc allocates a zeroed buffer of n elements, recorded in live.
func hostAlloc[T float32 | int32](h *host, op string, n int, live map[*hostSlice[T]]struct{}) *hostSlice[T] {
	b := &hostSlice[T]{owner: h}
	if !h.ok(op) {
		return b
	}
	if n < 0 {
		h.fail(op, "negative length %d", n)
		return b
	}
	b.data = make([]T, n)
	live[b] = struct{}{}
	return b
}

// hostFree frees b, which must be a *hostSlice[T] of h.
func hostFree[T float32 | int32](h *host, op string, b any, live map[*hostSlice[T]]struct{}) {
	if hb, ok := b.(*hostSlice[T]); ok && hb != nil && hb.owner == h {
		hb.freed, hb.data, hb.bf = true, nil, nil
		delete(live, hb)
		return
	}
	h.fail(op, "buffer was not allocated by this host device")
}

func (h *host) Write(dst Buffer, off int, src []float32) {
	if !h.ok("Write") {
		return
	}
	d := h.buf("Write", "dst", dst)
	if h.err != nil {
		return
	}
	if off < 0 || off+len(src) > len(d) {
		h.fail("Write", "%d elements at offset %d do not fit a buffer of %d", len(src), off, len(d))
		return
	}
	unpack(dst)
	copy(d[off:], src)
}

func (h *host) WriteInt(dst IntBuffer, src []int32) {
	if !h.ok("WriteInt") {
		return
	}
	d := h.ibuf("WriteInt", "dst", dst)
	if h.err != nil {
		return
	}
	if len(src) > len(d) {
		h.fail("WriteInt", "%d elements do not fit a buffer of %d", len(src), len(d))
		return
	}
	copy(d, src)
}

func (h *host) Read(dst []float32, src Buffer, off int) {
	if !h.ok("Read") {
		return
	}
	s, bf := h.bufBF("Read", "src", src)
	if h.err != nil {
		return
	}
	if n := len(s) + len(bf); off < 0 || off+len(dst) > n {
		h.fail("Read", "%d elements at offset %d exceed a buffer of %d", len(dst), off, n)
		return
	}
	if bf != nil {
		for i, v := range bf[off : off+len(dst)] {
			dst[i] = bf16f(v)
		}
		return
	}
	copy(dst, s[off:])
}

func (h *host) Zero(b Buffer) {
	if !h.ok("Zero") {
		return
	}
	clear(h.buf("Zero", "b", b))
	unpack(b)
}

func (h *host) Copy(dst, src Buffer) {
	if !h.ok("Copy") {
		return
	}
	d, s := h.buf("Copy", "dst", dst), h.buf("Copy", "src", src)
	if h.wantLen("Copy", "dst", d, len(s), "the length of src") {
		unpack(dst)
		copy(d, s)
	}
}

// extent is the number of elements a rows×cols matrix with row stride ld
// spans.
func extent(rows, cols, ld int) int {
	if rows == 0 || cols == 0 {
		return 0
	}
	return (rows-1)*ld + cols
}

func (h *host) MatMul(g Gemm) {
	const op = "MatMul"
	if !h.ok(op) {
		return
	}
	a, c := h.buf(op, "A", g.A), h.buf(op, "C", g.C)
	b, bh := h.bufBF(op, "B", g.B)
	if h.err != nil {
		return
	}
	l, err := g.Layout()
	if err != nil {
		h.fail(op, "%v", err)
		return
	}
	for _, x := range []struct {
		name string
		data []float32
		need int
		bf   int
	}{{"A", a, l.NeedA, 0}, {"B", b, l.NeedB, len(bh)}, {"C", c, l.NeedC, 0}} {
		if n := len(x.data) + x.bf; x.need > n {
			h.fail(op, "%s has %d elements, the product needs %d (%s)", x.name, n, x.need, g.shape())
			return
		}
	}
	batch, lda, ldb, ldc := l.Batch, l.LDA, l.LDB, l.LDC
	if same(c, a) || same(c, b) {
		h.fail(op, "C must not alias A or B")
		return
	}
	if g.M == 0 || g.N == 0 {
		return
	}
	tA, tB := blas.NoTrans, blas.NoTrans
	if g.TransA {
		tA = blas.Trans
	}
	if g.TransB {
		tB = blas.Trans
	}
	impl, serial := h.gemm()
	var packed []float32
	var bf bf16B
	hb := g.B.(*hostBuf)
	asPacked := impl.blas == nil && batch == 1 && g.TransB && hb.pn == g.N && hb.pk == g.K && ldb == g.K
	switch {
	case bh != nil && impl.blas != nil:
		// A BLAS reads float32 only: B widened for this product (a
		// transient copy; the Host's own sgemm needs none).
		b = widenBF16(bh[:l.NeedB])
	case bh != nil:
		bf = bf16B{b: bh, rowKern: hb.rowKern && asPacked}
	case hb.packed != nil && asPacked:
		packed = hb.packed
	}
	// Batches in parallel only when their outputs cannot overlap.
	if batch > 1 && g.StrideC >= extent(g.M, g.N, ldc) {
		t := &h.tasks.batchGemm
		*t = batchGemmTask{impl: impl, tA: tA, tB: tB, g: g, a: a, b: b, c: c, lda: lda, ldb: ldb, ldc: ldc, bf: bf}
		h.parallel(batch, g.M*g.N*max(g.K, 1), t)
		*t = batchGemmTask{}
		return
	}
	if batch == 1 && serial && h.procs > 1 && g.K > 0 && g.M*g.N*g.K >= 1<<18 {
		// Split over blocks of rows of C (or of columns, when C has
		// fewer rows than columns).
		// Columns per block: whole 16-column panels of sgemmVec's packed
		// B. Rows per block: multiples of 4, the shortest register tile,
		// so that the cores get even shares (a prefill step of 144 rows
		// splits 72 + 72 rather than 80 + 64 in blocks of 16; a row's
		// result does not depend on the block it falls in). A BLAS gets
		// one call per block of a fixed, larger size, so that no call's
		// shape depends on the core count (a BLAS may pick its code path,
		// and so its rounding, by shape).
		unit := 16
		switch {
		case impl.blas != nil:
			unit = 256
		case g.M >= g.N:
			unit = splitRowUnit
		}
		t := &h.tasks.splitGemm
		*t = splitGemmTask{batchGemmTask{impl: impl, tA: tA, tB: tB, g: g, a: a, b: b, c: c, lda: lda, ldb: ldb, ldc: ldc, packed: packed, bf: bf}, g.M >= g.N, unit}
		n := g.N
		if t.rows {
			n = g.M
		}
		parallelFor(&h.job, (n+unit-1)/unit, h.procs, t)
		*t = splitGemmTask{}
		return
	}
	t := batchGemmTask{impl: impl, tA: tA, tB: tB, g: g, a: a, b: b, c: c, lda: lda, ldb: ldb, ldc: ldc, packed: packed, bf: bf}
	t.Run(0, 0, batch)
}

// splitRowUnit is the rows per block of a product MatMul splits by rows
// on sgemmVec (a variable for BenchmarkSplitRows, which compares it with
// the former 16).
var splitRowUnit = 4

// parallelFor runs task over [0, n) split into up to parts contiguous
// chunks, on the calling goroutine and whichever of the worker pool's
// workers join in time, using j (idle: not in use by another loop).
func parallelFor(j *kernels.Job, n, parts int, task kernels.Task) {
	parts = max(min(parts, n), 1)
	j.For(n, (n+parts-1)/parts, parts-1, task)
}

// gemmImpl is the Host's sgemm: a BLAS, or sgemmVec when nil.
type gemmImpl struct{ blas blas.Float32 }

func (gi gemmImpl) sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if gi.blas == nil {
		sgemmVec(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	gi.blas.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// gemm returns the Host's sgemm and whether it runs on the calling
// goroutine only (then MatMul splits large products over the pool): the
// BLAS a build tag installs (OpenBLAS, whose results are not bit-exact
// across machines), else sgemmVec, on AVX-512, AVX2 or pure-Go
// micro-kernels that all give the same bits.
func (h *host) gemm() (gemmImpl, bool) {
	if hostBLAS.serial {
		return gemmImpl{blas32.Implementation()}, true
	}
	return gemmImpl{}, true
}

// hostBLASSetup describes the BLAS that gonum's blas32 calls: serial when
// it runs each product on the calling thread only (then the Host splits
// large products over its pool), and setup, if set, runs once per NewHost.
type hostBLASSetup struct {
	serial bool
	setup  func()
}

// hostBLAS is gonum's own parallel sgemm unless a build tag installs
// another BLAS (host_openblas.go).
var hostBLAS hostBLASSetup

// batchGemmTask runs the products [lo, hi) of a batched Gemm.
type batchGemmTask struct {
	impl          gemmImpl
	tA, tB        blas.Transpose
	g             Gemm
	a, b, c       []float32
	lda, ldb, ldc int
	packed        []float32 // B in packWeight's layout (one product, sgemmVec), or nil
	bf            bf16B     // B as bfloat16 (sgemmVec only; b is nil), or none
}

func (t *batchGemmTask) Run(_, lo, hi int) {
	g, ldc := &t.g, t.ldc
	for i := lo; i < hi; i++ {
		ci := t.c[i*g.StrideC:]
		if g.K == 0 {
			for r := 0; r < g.M; r++ {
				row := ci[r*ldc : r*ldc+g.N]
				for j := range row {
					if g.Beta == 0 {
						row[j] = 0
					} else {
						row[j] *= g.Beta
					}
				}
			}
			continue
		}
		if t.packed != nil {
			sgemmPacked(t.tA, g.M, g.N, g.K, g.Alpha, t.a, t.lda, t.packed, g.Beta, ci, ldc)
			continue
		}
		if t.bf.b != nil {
			sgemmBF16(t.tA, t.tB, g.M, g.N, g.K, g.Alpha, t.a[i*g.StrideA:], t.lda, bf16B{t.bf.b[i*g.StrideB:], t.bf.rowKern}, t.ldb, g.Beta, ci, ldc)
			continue
		}
		t.impl.sgemm(t.tA, t.tB, g.M, g.N, g.K, g.Alpha, t.a[i*g.StrideA:], t.lda, t.b[i*g.StrideB:], t.ldb, g.Beta, ci, ldc)
	}
}

// splitGemmTask runs one product as independent products over blocks of
// unit rows (or columns) of C: blocks [lo, hi), in one sgemmVec call
// (every element of C is computed by the same sequence of operations
// whatever the split) or one BLAS call per block. Either way the result
// does not depend on the core count.
type splitGemmTask struct {
	batchGemmTask
	rows bool
	unit int
}

func (t *splitGemmTask) Run(_, lo, hi int) {
	if t.impl.blas != nil && hi-lo > 1 {
		for i := lo; i < hi; i++ {
			t.Run(0, i, i+1)
		}
		return
	}
	g := &t.g
	if t.rows {
		r0, r1 := lo*t.unit, min(hi*t.unit, g.M)
		ao := r0 * t.lda
		if g.TransA {
			ao = r0
		}
		if t.packed != nil {
			sgemmPacked(t.tA, r1-r0, g.N, g.K, g.Alpha, t.a[ao:], t.lda, t.packed, g.Beta, t.c[r0*t.ldc:], t.ldc)
			return
		}
		if t.bf.b != nil {
			sgemmBF16(t.tA, t.tB, r1-r0, g.N, g.K, g.Alpha, t.a[ao:], t.lda, t.bf, t.ldb, g.Beta, t.c[r0*t.ldc:], t.ldc)
			return
		}
		t.impl.sgemm(t.tA, t.tB, r1-r0, g.N, g.K, g.Alpha, t.a[ao:], t.lda, t.b, t.ldb, g.Beta, t.c[r0*t.ldc:], t.ldc)
		return
	}
	c0, c1 := lo*t.unit, min(hi*t.unit, g.N)
	bo := c0
	if g.TransB {
		bo = c0 * t.ldb
	}
	if t.packed != nil {
		sgemmPacked(t.tA, g.M, c1-c0, g.K, g.Alpha, t.a, t.lda, t.packed[c0*g.K:], g.Beta, t.c[c0:], t.ldc)
		return
	}
	if t.bf.b != nil {
		sgemmBF16(t.tA, t.tB, g.M, c1-c0, g.K, g.Alpha, t.a, t.lda, bf16B{t.bf.b[bo:], t.bf.rowKern}, t.ldb, g.Beta, t.c[c0:], t.ldc)
		return
	}
	t.impl.sgemm(t.tA, t.tB, g.M, c1-c0, g.K, g.Alpha, t.a, t.lda, t.b[bo:], t.ldb, g.Beta, t.c[c0:], t.ldc)
}

// table checks an embedding table [V, d] and returns V.
func (h *host) table(op string, table []float32, d int) int { return h.tableLen(op, len(table), d) }

// tableLen checks that a table of n elements is [V, d] and returns V.
func (h *host) tableLen(op string, n, d int) int {
	if !h.positive(op, "d", d) {
		return 0
	}
	if n%d != 0 || n == 0 {
		h.fail(op, "table has %d elements, not a positive multiple of d = %d", n, d)
		return 0
	}
	return n / d
}

// inRange reports whether every row's entry of ids lies in [0, n);
// otherwise it fails op naming the first that does not (what: "id").
func (h *host) inRange(op, what string, ids []int32, n int) bool {
	for r, v := range ids {
		if v < 0 || int(v) >= n {
			h.fail(op, "row %d: %s %d outside [0, %d)", r, what, v, n)
			return false
		}
	}
	return true
}

func (h *host) Embed(out, table Buffer, ids IntBuffer, d int) {
	const op = "Embed"
	if !h.ok(op) {
		return
	}
	o, id := h.buf(op, "out", out), h.ibuf(op, "ids", ids)
	tb, tbf := h.bufBF(op, "table", table)
	var V int
	if tbf != nil {
		V = h.tableLen(op, len(tbf), d)
	} else {
		V = h.table(op, tb, d)
	}
	if !h.wantLen(op, "out", o, len(id)*d, "[rows, d]") || !h.noAlias(op, o, "out", map[string][]float32{"table": tb}) {
		return
	}
	if !h.inRange(op, "id", id, V) {
		return
	}
	for r, v := range id {
		if tbf != nil {
			dst := o[r*d : (r+1)*d]
			for j, x := range tbf[int(v)*d : (int(v)+1)*d] {
				dst[j] = bf16f(x)
			}
			continue
		}
		copy(o[r*d:(r+1)*d], tb[int(v)*d:(int(v)+1)*d])
	}
}

func (h *host) EmbedBackward(gtable, gout Buffer, ids IntBuffer, d int) {
	const op = "EmbedBackward"
	if !h.ok(op) {
		return
	}
	gt, g, id := h.buf(op, "gtable", gtable), h.buf(op, "gout", gout), h.ibuf(op, "ids", ids)
	V := h.table(op, gt, d)
	if !h.wantLen(op, "gout", g, len(id)*d, "[rows, d]") || !h.noAlias(op, gt, "gtable", map[string][]float32{"gout": g}) {
		return
	}
	if !h.inRange(op, "id", id, V) {
		return
	}
	for r, v := range id {
		dst, src := gt[int(v)*d:(int(v)+1)*d], g[r*d:(r+1)*d]
		for j, x := range src {
			dst[j] += x
		}
	}
}

func (h *host) RMSNorm(y, rstd, x, w Buffer, rows, d int, eps float32) {
	const op = "RMSNorm"
	if !h.ok(op) {
		return
	}
	yb, rb, xb, wb := h.buf(op, "y", y), h.buf(op, "rstd", rstd), h.buf(op, "x", x), h.buf(op, "w", w)
	if !h.positive(op, "rows, d", rows, d) ||
		!h.wantLen(op, "x", xb, rows*d, "[rows, d]") || !h.wantLen(op, "y", yb, rows*d, "[rows, d]") ||
		!h.wantLen(op, "w", wb, d, "[d]") || !h.wantLen(op, "rstd", rb, rows, "[rows]") ||
		!h.noAlias(op, yb, "y", map[string][]float32{"x": xb, "w": wb, "rstd": rb}) ||
		!h.noAlias(op, rb, "rstd", map[string][]float32{"x": xb, "w": wb}) {
		return
	}
	t := &h.tasks.rmsNorm
	*t = rmsNormTask{xb: xb, yb: yb, wb: wb, rb: rb, d: d, eps: eps}
	h.parallel(rows, d, t)
	*t = rmsNormTask{}
}

func (h *host) RMSNormBackward(dx, dw, dy, x, w, rstd Buffer, rows, d int) {
	const op = "RMSNormBackward"
	if !h.ok(op) {
		return
	}
	dxb, dyb, xb, wb, rb := h.buf(op, "dx", dx), h.buf(op, "dy", dy), h.buf(op, "x", x), h.buf(op, "w", w), h.buf(op, "rstd", rstd)
	var dwb []float32
	if dw != nil {
		dwb = h.buf(op, "dw", dw)
		h.wantLen(op, "dw", dwb, d, "[d]")
	}
	ins := map[string][]float32{"dy": dyb, "x": xb, "w": wb, "rstd": rb}
	if !h.positive(op, "rows, d", rows, d) ||
		!h.wantLen(op, "dx", dxb, rows*d, "[rows, d]") || !h.wantLen(op, "dy", dyb, rows*d, "[rows, d]") ||
		!h.wantLen(op, "x", xb, rows*d, "[rows, d]") || !h.wantLen(op, "w", wb, d, "[d]") ||
		!h.wantLen(op, "rstd", rb, rows, "[rows]") || !h.noAlias(op, dxb, "dx", ins) ||
		(dwb != nil && !h.noAlias(op, dwb, "dw", ins)) {
		return
	}
	t := &h.tasks.rmsNormBack
	*t = rmsNormBackTask{xb: xb, dyb: dyb, dxb: dxb, wb: wb, rb: rb, d: d}
	h.parallel(rows, 2*d, t)
	*t = rmsNormBackTask{}
	if dwb != nil {
		t := &h.tasks.rmsNormDW
		*t = rmsNormDWTask{dwb: dwb, dyb: dyb, xb: xb, rb: rb, d: d, rows: rows}
		h.parallel(d, 2*rows, t)
		*t = rmsNormDWTask{}
	}
}

func (h *host) RoPE(x, cos, sin Buffer, rows, heads, hd, T int, inverse bool) {
	const op = "RoPE"
	if !h.ok(op) {
		return
	}
	xb, cb, sb := h.buf(op, "x", x), h.buf(op, "cos", cos), h.buf(op, "sin", sin)
	if !h.positive(op, "rows, heads, hd, T", rows, heads, hd, T) {
		return
	}
	if hd%2 != 0 {
		h.fail(op, "head dimension %d is odd", hd)
		return
	}
	if !h.wantLen(op, "x", xb, rows*heads*hd, "[rows, heads, hd]") || !h.wantLen(op, "cos", cb, T*hd, "[T, hd]") ||
		!h.wantLen(op, "sin", sb, T*hd, "[T, hd]") || !h.noAlias(op, xb, "x", map[string][]float32{"cos": cb, "sin": sb}) {
		return
	}
	half := hd / 2
	t := &h.tasks.rope
	*t = ropeTask{xb: xb, cb: cb, sb: sb, heads: heads, hd: hd, half: half, T: T, inverse: inverse}
	h.parallel(rows, heads*hd, t)
	*t = ropeTask{}
}

func (h *host) heads(op string, dst, src []float32, B, T, heads, hd, repeat int, splitting bool) bool {
	if !h.positive(op, "B, T, heads, hd, repeat", B, T, heads, hd, repeat) {
		return false
	}
	small, big := B*T*heads*hd, B*T*heads*repeat*hd
	if splitting {
		return h.wantLen(op, "src", src, small, "[B, T, heads, hd]") && h.wantLen(op, "dst", dst, big, "[B, heads·repeat, T, hd]") &&
			h.noAlias(op, dst, "dst", map[string][]float32{"src": src})
	}
	return h.wantLen(op, "src", src, big, "[B, heads·repeat, T, hd]") && h.wantLen(op, "dst", dst, small, "[B, T, heads, hd]") &&
		h.noAlias(op, dst, "dst", map[string][]float32{"src": src})
}

func (h *host) SplitHeads(dst, src Buffer, B, T, heads, hd, repeat int) {
	const op = "SplitHeads"
	if !h.ok(op) {
		return
	}
	d, s := h.buf(op, "dst", dst), h.buf(op, "src", src)
	if !h.heads(op, d, s, B, T, heads, hd, repeat, true) {
		return
	}
	HH := heads * repeat
	t := &h.tasks.splitHeads
	*t = splitHeadsTask{headsArgs{d: d, s: s, T: T, heads: heads, hd: hd, repeat: repeat, HH: HH}}
	h.parallel(B*HH, T*hd, t)
	*t = splitHeadsTask{}
}

func (h *host) MergeHeads(dst, src Buffer, B, T, heads, hd, repeat int) {
	const op = "MergeHeads"
	if !h.ok(op) {
		return
	}
	d, s := h.buf(op, "dst", dst), h.buf(op, "src", src)
	if !h.heads(op, d, s, B, T, heads, hd, repeat, false) {
		return
	}
	HH := heads * repeat
	t := &h.tasks.mergeHeads
	*t = mergeHeadsTask{headsArgs{d: d, s: s, T: T, heads: heads, hd: hd, repeat: repeat, HH: HH}}
	h.parallel(B*T, heads*repeat*hd, t)
	*t = mergeHeadsTask{}
}

func (h *host) CausalSoftmax(p, s Buffer, rows, T int) {
	const op = "CausalSoftmax"
	if !h.ok(op) {
		return
	}
	pb, sb := h.buf(op, "p", p), h.buf(op, "s", s)
	if !h.positive(op, "rows, T", rows, T) || !h.wantLen(op, "s", sb, rows*T, "[rows, T]") || !h.wantLen(op, "p", pb, rows*T, "[rows, T]") {
		return
	}
	t := &h.tasks.softmax
	*t = softmaxTask{pb: pb, sb: sb, T: T}
	h.parallel(rows, T, t)
	*t = softmaxTask{}
}

// rowMax returns the largest element of x (NaN if x holds one); x is not
// empty.
func rowMax(x []float32) float32 {
	k, m := maxVec(x)
	if k == 0 {
		m, k = x[0], 1
	}
	for _, v := range x[k:] {
		m = max(m, v)
	}
	return m
}

func (h *host) CausalSoftmaxBackward(ds, p, dp Buffer, rows, T int) {
	const op = "CausalSoftmaxBackward"
	if !h.ok(op) {
		return
	}
	db, pb, dpb := h.buf(op, "ds", ds), h.buf(op, "p", p), h.buf(op, "dp", dp)
	if !h.positive(op, "rows, T", rows, T) || !h.wantLen(op, "p", pb, rows*T, "[rows, T]") ||
		!h.wantLen(op, "dp", dpb, rows*T, "[rows, T]") || !h.wantLen(op, "ds", db, rows*T, "[rows, T]") ||
		!h.noAlias(op, db, "ds", map[string][]float32{"p": pb}) {
		return
	}
	t := &h.tasks.softmaxBack
	*t = softmaxBackTask{db: db, pb: pb, dpb: dpb, T: T}
	h.parallel(rows, T, t)
	*t = softmaxBackTask{}
}

func (h *host) SwiGLU(act, g, u Buffer) {
	const op = "SwiGLU"
	if !h.ok(op) {
		return
	}
	ab, gb, ub := h.buf(op, "act", act), h.buf(op, "g", g), h.buf(op, "u", u)
	if !h.wantLen(op, "u", ub, len(gb), "the length of g") || !h.wantLen(op, "act", ab, len(gb), "the length of g") ||
		!h.noAlias(op, ab, "act", map[string][]float32{"g": gb, "u": ub}) {
		return
	}
	// Chunks of whole 8-lane vectors: the same elements take the vector
	// loop whatever the split.
	n := len(gb)
	t := &h.tasks.swiglu
	*t = swigluTask{ab: ab, gb: gb, ub: ub, n: n}
	h.parallel((n+7)/8, 64, t)
	*t = swigluTask{}
}

func (h *host) SwiGLUBackward(dg, du, dact, g, u Buffer) {
	const op = "SwiGLUBackward"
	if !h.ok(op) {
		return
	}
	dgb, dub, dab, gb, ub := h.buf(op, "dg", dg), h.buf(op, "du", du), h.buf(op, "dact", dact), h.buf(op, "g", g), h.buf(op, "u", u)
	n := len(gb)
	ins := map[string][]float32{"dact": dab, "g": gb, "u": ub}
	if !h.wantLen(op, "u", ub, n, "the length of g") || !h.wantLen(op, "dact", dab, n, "the length of g") ||
		!h.wantLen(op, "dg", dgb, n, "the length of g") || !h.wantLen(op, "du", dub, n, "the length of g") ||
		!h.noAlias(op, dgb, "dg", ins) || !h.noAlias(op, dub, "du", ins) || !h.noAlias(op, dgb, "dg", map[string][]float32{"du": dub}) {
		return
	}
	t := &h.tasks.swigluBack
	*t = swigluBackTask{dgb: dgb, dub: dub, dab: dab, gb: gb, ub: ub, n: n}
	h.parallel((n+7)/8, 64, t)
	*t = swigluBackTask{}
}

func (h *host) Mul(dst, a, b Buffer) {
	const op = "Mul"
	if !h.ok(op) {
		return
	}
	db, ab, bb := h.buf(op, "dst", dst), h.buf(op, "a", a), h.buf(op, "b", b)
	if !h.wantLen(op, "b", bb, len(ab), "the length of a") || !h.wantLen(op, "dst", db, len(ab), "the length of a") {
		return
	}
	t := &h.tasks.mul
	*t = mulTask{db: db, ab: ab, bb: bb}
	h.parallel(len(ab), 1, t)
	*t = mulTask{}
}

func (h *host) Axpy(y Buffer, alpha float32, x Buffer) {
	const op = "Axpy"
	if !h.ok(op) {
		return
	}
	yb, xb := h.buf(op, "y", y), h.buf(op, "x", x)
	if !h.wantLen(op, "y", yb, len(xb), "the length of x") || !h.noAlias(op, yb, "y", map[string][]float32{"x": xb}) {
		return
	}
	t := &h.tasks.axpy
	*t = axpyTask{yb: yb, xb: xb, alpha: alpha}
	h.parallel(len(xb), 1, t)
	*t = axpyTask{}
}

func (h *host) CrossEntropy(loss, dlogits, logits Buffer, targets IntBuffer, rows, V int, scale float32) {
	const op = "CrossEntropy"
	if !h.ok(op) {
		return
	}
	lb, db, xb, tb := h.buf(op, "loss", loss), h.buf(op, "dlogits", dlogits), h.buf(op, "logits", logits), h.ibuf(op, "targets", targets)
	if !h.positive(op, "rows, V", rows, V) || !h.wantLen(op, "logits", xb, rows*V, "[rows, V]") ||
		!h.wantLen(op, "dlogits", db, rows*V, "[rows, V]") || !h.wantLen(op, "loss", lb, rows, "[rows]") ||
		!h.noAlias(op, lb, "loss", map[string][]float32{"logits": xb, "dlogits": db}) {
		return
	}
	if len(tb) != rows {
		h.fail(op, "targets has %d elements, want rows = %d", len(tb), rows)
		return
	}
	for r, v := range tb {
		if v < 0 || int(v) >= V {
			h.fail(op, "row %d: target %d outside [0, %d)", r, v, V)
			return
		}
	}
	t := &h.tasks.crossEntropy
	*t = crossEntropyTask{lb: lb, db: db, xb: xb, tb: tb, V: V, scale: scale}
	h.parallel(rows, 3*V, t)
	*t = crossEntropyTask{}
}

func (h *host) SquaredNorm(x Buffer) float64 {
	if !h.ok("SquaredNorm") {
		return 0
	}
	xb := h.buf("SquaredNorm", "x", x)
	var s float64
	for _, v := range xb {
		s += float64(float64(v) * float64(v))
	}
	if h.err != nil {
		return 0
	}
	return s
}

func (h *host) AdamW(w, g, m, v Buffer, p AdamW) {
	const op = "AdamW"
	if !h.ok(op) {
		return
	}
	wb, gb, mb, vb := h.buf(op, "w", w), h.buf(op, "g", g), h.buf(op, "m", m), h.buf(op, "v", v)
	n := len(wb)
	if !h.wantLen(op, "g", gb, n, "the length of w") || !h.wantLen(op, "m", mb, n, "the length of w") ||
		!h.wantLen(op, "v", vb, n, "the length of w") {
		return
	}
	if same(wb, gb) || same(wb, mb) || same(wb, vb) || same(gb, mb) || same(gb, vb) || same(mb, vb) {
		h.fail(op, "w, g, m and v must be four distinct buffers")
		return
	}
	unpack(w)
	stepSize := p.LR / p.BC1
	sqrtBC2 := float32(math.Sqrt(float64(p.BC2)))
	b1, b2 := p.Beta1, p.Beta2
	t := &h.tasks.adamW
	*t = adamWTask{wb: wb, gb: gb, mb: mb, vb: vb, p: p, stepSize: stepSize, sqrtBC2: sqrtBC2, b1: b1, b2: b2}
	h.parallel(n, 8, t)
	*t = adamWTask{}
}

func (h *host) Sync() error {
	err := h.err
	h.err = nil
	return err
}

func (h *host) Close() error {
	err := h.err
	for b := range h.bufs {
		b.freed, b.data, b.bf = true, nil, nil
	}
	for b := range h.ints {
		b.freed, b.data = true, nil
	}
	clear(h.bufs)
	clear(h.ints)
	h.closed = true
	return err
}
