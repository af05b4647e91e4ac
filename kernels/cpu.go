package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"unsafe"
)

// CPU is the default Backend: pure Go (with an AVX-512 or AVX2 inner loop for
// WeightedSum on amd64), parallel over the process-wide worker pool (Job).
// Work is split into fixed chunks; the split never changes a result, so a
// CPU with any number of threads gives the bits Reference gives. The hot
// methods allocate nothing once warm. A CPU is safe for concurrent use.
type CPU struct {
	p *pool
}

var (
	_ Backend        = (*CPU)(nil)
	_ WeightedMeaner = (*CPU)(nil)
)

// NewCPU returns a CPU backend that runs each call on up to threads
// goroutines (the caller's and up to threads−1 of the worker pool's, which
// has GOMAXPROCS−1); threads <= 0 means runtime.GOMAXPROCS(0).
func NewCPU(threads int) *CPU {
	if threads <= 0 {
		threads = defaultThreads()
	}
	return &CPU{p: newPool(threads)}
}

var defaultCPU = sync.OnceValue(func() *CPU { return NewCPU(0) })

// Default returns the process-wide CPU backend, sized to GOMAXPROCS when it
// is first called.
func Default() Backend { return defaultCPU() }

// Name returns "cpu".
func (c *CPU) Name() string { return "cpu" }

// Threads returns the number of goroutines a call may use.
func (c *CPU) Threads() int { return c.p.threads }

// Chunk sizes, in elements. They set how work is split between threads and
// never change a result.
const (
	streamChunk = 1 << 16 // elementwise ops
	wsumChunk   = 1 << 15 // WeightedSum: elements of acc per chunk
	wsumTile    = 1 << 11 // WeightedSum: acc elements kept in L1 across all inputs
	reduceGroup = 8       // SquaredNorm: blocks per chunk (summed interleaved)
	sortChunk   = 1 << 12 // Median, TrimmedMean: coordinates per chunk
	quantChunk  = 1 << 16 // QuantizeInt8: about this many elements per chunk
)

// WeightedSum implements Backend.
func (c *CPU) WeightedSum(acc []float64, w []float64, xs [][]float32) {
	CheckWeightedSum(acc, w, xs)
	if len(xs) == 0 || len(acc) == 0 {
		return
	}
	t := c.p.get()
	t.op, t.acc, t.w, t.xs = opWeightedSum, acc, w, xs
	c.start(t, len(acc), wsumChunk)
}

// WeightedMean implements WeightedMeaner: on amd64 with AVX-512 and up to
// 16 inputs, one fused pass whose accumulators never leave the registers.
func (c *CPU) WeightedMean(dst []float32, w []float64, xs [][]float32, s float64) {
	CheckWeightedMean(dst, w, xs)
	t := c.p.get()
	t.op, t.dst, t.w, t.xs, t.s64 = opWeightedMean, dst, w, xs, s
	c.start(t, len(dst), wsumChunk)
}

// Store implements Backend.
func (c *CPU) Store(dst []float32, acc []float64, s float64) {
	checkLen("Store", "dst", len(dst), "acc", len(acc))
	t := c.p.get()
	t.op, t.dst, t.acc, t.s64 = opStore, dst, acc, s
	c.start(t, len(acc), streamChunk)
}

// Scale implements Backend.
func (c *CPU) Scale(x []float32, s float32) {
	t := c.p.get()
	t.op, t.x, t.s32 = opScale, x, s
	c.start(t, len(x), streamChunk)
}

// SquaredNorm implements Backend.
func (c *CPU) SquaredNorm(x []float32) float64 {
	nb := chunkCount(len(x), ReduceBlock)
	t := c.p.get()
	t.op, t.x = opSquaredNorm, x
	t.partials = grow(t.partials, nb)
	c.start(t, nb, reduceGroup)
	var total float64
	for _, p := range t.partials[:nb] {
		total += p
	}
	c.p.put(t)
	return total
}

// PairwiseSquaredDistances implements Backend.
func (c *CPU) PairwiseSquaredDistances(d []float64, xs [][]float32) {
	m := CheckPairwise(d, xs)
	n := len(xs)
	npairs := n * (n - 1) / 2
	if npairs == 0 {
		return
	}
	nb := chunkCount(m, ReduceBlock)
	t := c.p.get()
	t.op, t.d, t.xs = opPairwise, d, xs
	t.partials = grow(t.partials, nb*npairs)
	c.start(t, nb, 1)
	p := 0
	for i := range n {
		for j := i + 1; j < n; j++ {
			var total float64
			for b := range nb {
				total += t.partials[b*npairs+p]
			}
			d[i*n+j] += total
			d[j*n+i] += total
			p++
		}
	}
	c.p.put(t)
}

// Median implements Backend.
func (c *CPU) Median(dst []float32, xs [][]float32) {
	CheckCoordinatewise("Median", dst, xs)
	t := c.p.get()
	t.op, t.dst, t.xs = opMedian, dst, xs
	c.start(t, len(dst), sortChunk)
}

// TrimmedMean implements Backend.
func (c *CPU) TrimmedMean(dst []float32, xs [][]float32, k int) {
	CheckCoordinatewise("TrimmedMean", dst, xs)
	CheckTrim(k, len(xs))
	t := c.p.get()
	t.op, t.dst, t.xs, t.k = opTrimmedMean, dst, xs, k
	c.start(t, len(dst), sortChunk)
}

// QuantizeInt8 implements Backend.
func (c *CPU) QuantizeInt8(q []int8, scales []float32, x []float32, block int) {
	CheckQuant("QuantizeInt8", len(x), len(q), len(scales), block)
	t := c.p.get()
	t.op, t.q, t.scales, t.x, t.block = opQuantize, q, scales, x, block
	c.start(t, len(scales), max(1, quantChunk/block))
}

// DequantizeInt8 implements Backend.
func (c *CPU) DequantizeInt8(x []float32, q []int8, scales []float32, block int) {
	CheckQuant("DequantizeInt8", len(q), len(x), len(scales), block)
	t := c.p.get()
	t.op, t.x, t.q, t.scales, t.block = opDequantize, x, q, scales, block
	c.start(t, len(scales), max(1, quantChunk/block))
}

// FirstNonFinite implements Backend.
func (c *CPU) FirstNonFinite(x []float32) int {
	t := c.p.get()
	t.op, t.x = opFirstNonFinite, x
	t.found.Store(math.MaxInt64)
	t.n, t.chunk, t.nchunks = len(x), streamChunk, chunkCount(len(x), streamChunk)
	c.p.run(t)
	i := t.found.Load()
	c.p.put(t)
	runtime.KeepAlive(c) // see start
	if i == math.MaxInt64 {
		return -1
	}
	return int(i)
}

// start runs t over n units in chunks of chunk units and, unless t carries
// partials its caller still reads, returns t to the free list.
func (c *CPU) start(t *task, n, chunk int) {
	t.n, t.chunk, t.nchunks = n, chunk, chunkCount(n, chunk)
	c.p.run(t)
	if t.op != opSquaredNorm && t.op != opPairwise {
		c.p.put(t)
	}
	// c's cleanup closes the workers' channel: c must stay reachable until
	// every send to it is done.
	runtime.KeepAlive(c)
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// do runs chunk ci of t; slot is the participant's scratch slot.
func (t *task) do(ci, slot int) {
	lo := ci * t.chunk
	hi := min(lo+t.chunk, t.n)
	switch t.op {
	case opWeightedSum:
		wsumInto(t.acc[lo:hi], t.w, t.xs, lo)
	case opWeightedMean:
		weightedMeanRange(t, slot, lo, hi)
	case opStore:
		storeRange(t.dst[lo:hi], t.acc[lo:hi], t.s64)
	case opScale:
		scaleRange(t.x[lo:hi], t.s32)
	case opSquaredNorm:
		squaredNormBlocks(t.partials[lo:hi], t.x, lo)
	case opPairwise:
		pairwiseBlock(t.partials, t.xs, lo)
	case opMedian, opTrimmedMean:
		n := len(t.xs)
		t.scratch[slot] = grow(t.scratch[slot], n)
		sortedRange(t, t.scratch[slot], lo, hi)
	case opQuantize:
		for b := lo; b < hi; b++ {
			e := min((b+1)*t.block, len(t.x))
			t.scales[b] = quantizeBlock(t.q[b*t.block:e], t.x[b*t.block:e])
		}
	case opDequantize:
		for b := lo; b < hi; b++ {
			e := min((b+1)*t.block, len(t.x))
			dequantizeBlock(t.x[b*t.block:e], t.q[b*t.block:e], t.scales[b])
		}
	case opFirstNonFinite:
		if int64(lo) > t.found.Load() {
			return // an earlier chunk already has one
		}
		if i := firstNonFinite(t.x[lo:hi]); i >= 0 {
			i += lo
			for {
				cur := t.found.Load()
				if int64(i) >= cur || t.found.CompareAndSwap(cur, int64(i)) {
					break
				}
			}
		}
	}
}

// wsumInto adds Σ_k w[k]·xs[k][off+i] to a[i], a tile of a at a time: each
// tile stays in L1 while every input adds into it, four inputs per pass,
// each element taking its terms in k order.
func wsumInto(a []float64, w []float64, xs [][]float32, off int) {
	for b := 0; b < len(a); b += wsumTile {
		e := min(b+wsumTile, len(a))
		t := a[b:e]
		lo, hi := off+b, off+e
		k := 0
		for ; k+4 <= len(xs); k += 4 {
			wsum4(t, xs[k][lo:hi], xs[k+1][lo:hi], xs[k+2][lo:hi], xs[k+3][lo:hi], w[k], w[k+1], w[k+2], w[k+3])
		}
		for ; k+2 <= len(xs); k += 2 {
			wsum2(t, xs[k][lo:hi], xs[k+1][lo:hi], w[k], w[k+1])
		}
		if k < len(xs) {
			wsum1(t, xs[k][lo:hi], w[k])
		}
	}
}

// weightedMeanRange does WeightedMean for dst[lo:hi]: the fused assembly
// where it applies, else (and for its tail) a scratch accumulator that is
// cleared, summed into and stored, exactly as the unfused calls would.
func weightedMeanRange(t *task, slot, lo, hi int) {
	lo += weightedMeanAsm(t.dst, t.w, t.xs, t.s64, lo, hi)
	if lo == hi {
		return
	}
	t.accs[slot] = grow(t.accs[slot], wsumChunk)
	a := t.accs[slot][:hi-lo]
	clear(a)
	wsumInto(a, t.w, t.xs, lo)
	storeRange(t.dst[lo:hi], a, t.s64)
}

// wsum4Go adds four weighted inputs to acc; every slice has len(acc)
// elements.
func wsum4Go(acc []float64, x0, x1, x2, x3 []float32, w0, w1, w2, w3 float64) {
	n := len(acc)
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	for i := range acc {
		a := acc[i]
		a += float64(w0 * float64(x0[i]))
		a += float64(w1 * float64(x1[i]))
		a += float64(w2 * float64(x2[i]))
		a += float64(w3 * float64(x3[i]))
		acc[i] = a
	}
}

func wsum2(acc []float64, x0, x1 []float32, w0, w1 float64) {
	n := len(acc)
	x0, x1 = x0[:n], x1[:n]
	for i := range acc {
		a := acc[i]
		a += float64(w0 * float64(x0[i]))
		a += float64(w1 * float64(x1[i]))
		acc[i] = a
	}
}

func wsum1(acc []float64, x0 []float32, w0 float64) {
	x0 = x0[:len(acc)]
	for i := range acc {
		acc[i] += float64(w0 * float64(x0[i]))
	}
}

func storeRange(dst []float32, acc []float64, s float64) {
	dst = dst[:len(acc)]
	for i := range acc {
		dst[i] = float32(acc[i] * s)
	}
}

func scaleRange(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

// BlockSquaredNorms writes to out[b] the squared norm of block b of x
// (blocks of ReduceBlock elements, the last one possibly short), each summed
// in float64 in index order: the partials Backend.SquaredNorm adds up. A
// caller that adds them in block order gets the same bits however it cuts x
// into block-aligned chunks. len(out) must be ceil(len(x)/ReduceBlock). It
// runs on the calling goroutine and does not allocate.
func BlockSquaredNorms(out []float64, x []float32) {
	if want := (len(x) + ReduceBlock - 1) / ReduceBlock; len(out) != want {
		panic(fmt.Sprintf("kernels: BlockSquaredNorms: %d partials for %d elements, want %d", len(out), len(x), want))
	}
	squaredNormBlocks(out, x, 0)
}

// squaredNormBlocks writes the partials of blocks lo, lo+1, … of x to out,
// one per element of out. Eight blocks are summed side by side, each in its
// own sequential chain, so the adds overlap without changing any block's
// order of addition.
func squaredNormBlocks(out []float64, x []float32, lo int) {
	b := 0
	for ; b+8 <= len(out) && (lo+b+8)*ReduceBlock <= len(x); b += 8 {
		squaredNorm8((*[8]float64)(out[b:b+8]), x[(lo+b)*ReduceBlock:(lo+b+8)*ReduceBlock])
	}
	for ; b < len(out); b++ {
		s := (lo + b) * ReduceBlock
		out[b] = squaredNormSeq(x[s:min(s+ReduceBlock, len(x))])
	}
}

func squaredNormSeq(x []float32) float64 {
	var p float64
	for _, v := range x {
		p += float64(float64(v) * float64(v))
	}
	return p
}

// squaredNorm8 sums eight whole blocks; len(x) == 8*ReduceBlock.
func squaredNorm8(out *[8]float64, x []float32) {
	const B = ReduceBlock
	b0, b1, b2, b3 := x[0*B:1*B:1*B], x[1*B:2*B:2*B], x[2*B:3*B:3*B], x[3*B:4*B:4*B]
	b4, b5, b6, b7 := x[4*B:5*B:5*B], x[5*B:6*B:6*B], x[6*B:7*B:7*B], x[7*B:8*B:8*B]
	var s0, s1, s2, s3, s4, s5, s6, s7 float64
	for i := range B {
		v0, v1, v2, v3 := float64(b0[i]), float64(b1[i]), float64(b2[i]), float64(b3[i])
		v4, v5, v6, v7 := float64(b4[i]), float64(b5[i]), float64(b6[i]), float64(b7[i])
		s0 += float64(v0 * v0)
		s1 += float64(v1 * v1)
		s2 += float64(v2 * v2)
		s3 += float64(v3 * v3)
		s4 += float64(v4 * v4)
		s5 += float64(v5 * v5)
		s6 += float64(v6 * v6)
		s7 += float64(v7 * v7)
	}
	*out = [8]float64{s0, s1, s2, s3, s4, s5, s6, s7}
}

// pairwiseBlock writes block b's partial of every pair to
// partials[b*npairs+p], p numbering the pairs i < j in row order. Four
// pairs sharing i are summed side by side, each in its own chain.
func pairwiseBlock(partials []float64, xs [][]float32, b int) {
	n := len(xs)
	npairs := n * (n - 1) / 2
	lo := b * ReduceBlock
	hi := min(lo+ReduceBlock, len(xs[0]))
	out := partials[b*npairs : (b+1)*npairs]
	p := 0
	for i := range n {
		a := xs[i][lo:hi]
		j := i + 1
		for ; j+4 <= n; j += 4 {
			out[p], out[p+1], out[p+2], out[p+3] = dist4(a, xs[j][lo:hi], xs[j+1][lo:hi], xs[j+2][lo:hi], xs[j+3][lo:hi])
			p += 4
		}
		for ; j < n; j++ {
			out[p] = dist1(a, xs[j][lo:hi])
			p++
		}
	}
}

func dist4(a, y0, y1, y2, y3 []float32) (s0, s1, s2, s3 float64) {
	n := len(a)
	y0, y1, y2, y3 = y0[:n], y1[:n], y2[:n], y3[:n]
	for i, v := range a {
		f := float64(v)
		t0, t1, t2, t3 := f-float64(y0[i]), f-float64(y1[i]), f-float64(y2[i]), f-float64(y3[i])
		s0 += float64(t0 * t0)
		s1 += float64(t1 * t1)
		s2 += float64(t2 * t2)
		s3 += float64(t3 * t3)
	}
	return
}

func dist1(a, y []float32) float64 {
	y = y[:len(a)]
	var s float64
	for i, v := range a {
		t := float64(v) - float64(y[i])
		s += float64(t * t)
	}
	return s
}

// sortedRange does Median or TrimmedMean for coordinates [lo, hi), sorting
// each coordinate's values (as totalOrder keys) in keys.
func sortedRange(t *task, keys []uint32, lo, hi int) {
	n := len(t.xs)
	for i := lo; i < hi; i++ {
		for k, x := range t.xs {
			keys[k] = totalOrderKey(x[i])
		}
		sortKeys(keys)
		if t.op == opMedian {
			if n%2 == 1 {
				t.dst[i] = fromTotalOrderKey(keys[n/2])
			} else {
				t.dst[i] = float32((float64(fromTotalOrderKey(keys[n/2-1])) + float64(fromTotalOrderKey(keys[n/2]))) / 2)
			}
			continue
		}
		var s float64
		for _, key := range keys[t.k : n-t.k] {
			s += float64(fromTotalOrderKey(key))
		}
		t.dst[i] = float32(s / float64(n-2*t.k))
	}
}

// sortKeys sorts a few keys by insertion, more with the library's sort.
func sortKeys(keys []uint32) {
	if len(keys) > 24 {
		slices.Sort(keys)
		return
	}
	for i := 1; i < len(keys); i++ {
		v := keys[i]
		j := i
		for ; j > 0 && keys[j-1] > v; j-- {
			keys[j] = keys[j-1]
		}
		keys[j] = v
	}
}

// quantizeBlock quantizes one block and returns its scale.
func quantizeBlock(q []int8, x []float32) float32 {
	q = q[:len(x)]
	var m float32
	for _, v := range x {
		a := math.Float32frombits(math.Float32bits(v) &^ (1 << 31))
		if a > m {
			m = a
		}
	}
	scale := m / 127
	if scale == 0 {
		clear(q)
		return 0
	}
	for i, v := range x {
		r := float64(v / scale)
		switch {
		case r != r:
			q[i] = 0
		case r >= 126.5:
			q[i] = 127
		case r <= -126.5:
			q[i] = -127
		case r >= 0:
			// r+0.5 is exact in float64 (|r| < 127 and r is a float32),
			// so truncating it rounds half away from zero.
			q[i] = int8(r + 0.5)
		default:
			q[i] = -int8(-r + 0.5)
		}
	}
	return scale
}

func dequantizeBlock(x []float32, q []int8, scale float32) {
	q = q[:len(x)]
	for i := range x {
		x[i] = float32(q[i]) * scale
	}
}

// firstNonFinite returns the index of the first NaN or ±Inf in x, or -1: an
// all-ones exponent field marks both. Eight values are tested at once, two
// per 64-bit word: with e the exponent field of a lane, e + 2^23 reaches
// bit 31 of the lane exactly when e is all ones, and never carries into the
// next lane.
func firstNonFinite(x []float32) int {
	const (
		exp  = 0x7f800000
		exp2 = 0x7f8000007f800000
		one2 = 0x0080000000800000
		top2 = 0x8000000080000000
	)
	i := 0
	if len(x) >= 8 {
		b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
		for ; i+8 <= len(x); i += 8 {
			w := b[4*i : 4*i+32 : 4*i+32]
			t := (binary.NativeEndian.Uint64(w[0:])&exp2 + one2) |
				(binary.NativeEndian.Uint64(w[8:])&exp2 + one2) |
				(binary.NativeEndian.Uint64(w[16:])&exp2 + one2) |
				(binary.NativeEndian.Uint64(w[24:])&exp2 + one2)
			if t&top2 != 0 {
				break
			}
		}
	}
	for ; i < len(x); i++ {
		if math.Float32bits(x[i])&exp == exp {
			return i
		}
	}
	return -1
}
