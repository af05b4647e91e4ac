//go:build fedcuda || fedcudaemu

package cuda

import (
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/fedtune/fedtune/kernels"
)

// Backend is kernels.Backend (and kernels.WeightedMeaner) on one GPU. Its
// inputs are host slices: each call copies them to device scratch buffers
// that it keeps between calls, runs the kernels of aggregate.cu and copies
// the result back, in chunks of at most about 256 MiB of input, so vectors
// of any length fit. Every result has the bits kernels.Reference gives.
//
// Calls are serialised (one stream). Should the GPU fail during a call (out
// of memory, a lost device), the rest of that call is computed by
// kernels.Default() instead, which gives the same bits; the failure is
// logged once and counted by Fallbacks, and Err returns the last one.
type Backend struct {
	mu     sync.Mutex
	ctx    *Context
	c      device // ctx, as the interface the kernels are launched through
	own    bool   // Close closes ctx
	budget int64  // bytes of input rows per chunk

	in, acc, out, aux devBuf

	fallbacks atomic.Int64
	lastErr   atomic.Pointer[error]
	warned    sync.Once
}

var (
	_ kernels.Backend        = (*Backend)(nil)
	_ kernels.WeightedMeaner = (*Backend)(nil)
)

// defaultChunkBytes bounds the input rows one chunk copies to the GPU.
const defaultChunkBytes = 256 << 20

// devBuf is a device scratch buffer that only grows.
type devBuf struct {
	p DevicePtr
	n int64
}

// device is the part of Context a Backend and the Sgemm fallback use.
type device interface {
	Name() string
	Alloc(bytes int64) (DevicePtr, error)
	Free(p DevicePtr)
	HtoD(dst DevicePtr, src unsafe.Pointer, bytes int64) error
	DtoH(dst unsafe.Pointer, src DevicePtr, bytes int64) error
	Launch(kernel string, grid, block [3]int, sharedBytes int, args ...any) error
	Sync() error
}

var _ device = (*Context)(nil)

// NewBackend returns a Backend on an open Context; closing the Backend does
// not close c.
func NewBackend(c *Context) *Backend {
	return &Backend{ctx: c, c: c, budget: defaultChunkBytes}
}

// OpenBackend opens GPU ordinal and returns a Backend that owns it.
func OpenBackend(ordinal int) (*Backend, error) {
	c, err := Open(ordinal)
	if err != nil {
		return nil, err
	}
	b := NewBackend(c)
	b.own = true
	return b, nil
}

// Name returns "cuda".
func (b *Backend) Name() string { return "cuda" }

// Context returns the GPU the Backend runs on.
func (b *Backend) Context() *Context { return b.ctx }

// Fallbacks returns how many calls (or their remainders) ran on the CPU
// because the GPU failed.
func (b *Backend) Fallbacks() int64 { return b.fallbacks.Load() }

// Err returns the last GPU failure, nil if none.
func (b *Backend) Err() error {
	if p := b.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Close frees the scratch buffers and, for a Backend from OpenBackend,
// closes its Context.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range []*devBuf{&b.in, &b.acc, &b.out, &b.aux} {
		b.c.Free(d.p)
		*d = devBuf{}
	}
	if b.own {
		return b.ctx.Close()
	}
	return nil
}

// fail records a GPU failure; the caller then finishes on the CPU.
func (b *Backend) fail(method string, err error) {
	err = fmt.Errorf("cuda backend: %s: %w", method, err)
	b.lastErr.Store(&err)
	b.fallbacks.Add(1)
	b.warned.Do(func() {
		slog.Warn("GPU failed; computing on the CPU instead (same results)", "backend", "cuda", "gpu", b.c.Name(), "err", err)
	})
}

// ensure grows d to at least bytes.
func (b *Backend) ensure(d *devBuf, bytes int64) error {
	if bytes <= d.n {
		return nil
	}
	if d.p != 0 {
		b.c.Free(d.p)
		*d = devBuf{}
	}
	p, err := b.c.Alloc(bytes)
	if err != nil {
		return err
	}
	*d = devBuf{p: p, n: bytes}
	return nil
}

// rowLen returns how many elements of each of rows inputs one chunk holds:
// a multiple of ReduceBlock (so reduction blocks never straddle chunks),
// at most n.
func (b *Backend) rowLen(rows, n int) int {
	per := b.budget / 4 / int64(max(rows, 1))
	per = max(per/kernels.ReduceBlock*kernels.ReduceBlock, kernels.ReduceBlock)
	return int(min(per, int64(n)))
}

const threadsPerBlock = 256

// grid1 returns a one-dimensional grid for work threads (the kernels loop
// over whatever the grid does not cover).
func grid1(work int64) [3]int {
	g := (work + threadsPerBlock - 1) / threadsPerBlock
	return [3]int{int(min(max(g, 1), 1<<16)), 1, 1}
}

var block1 = [3]int{threadsPerBlock, 1, 1}

// rowsIn copies xs[k][off:off+m] to row k of b.in (rows ld elements apart).
func (b *Backend) rowsIn(xs [][]float32, off, m, ld int) error {
	if err := b.ensure(&b.in, int64(max(len(xs), 1))*int64(ld)*4); err != nil {
		return err
	}
	for k, x := range xs {
		if err := b.c.HtoD(ptr(b.in.p, int64(k)*int64(ld)*4), unsafe.Pointer(&x[off]), int64(m)*4); err != nil {
			return err
		}
	}
	return nil
}

// Flags of agg_wsum16 (see aggregate.cu).
const (
	flagReadAcc  = 1
	flagWriteAcc = 2
	flagWriteDst = 4
	flagVector   = 8
)

// maxTerms is the number of inputs agg_wsum16 takes per launch.
const maxTerms = 16

// wsum queues agg_wsum16 launches over n elements: inputs in groups of
// maxTerms, the running sum kept in acc between groups. readAcc starts from
// acc; writeAcc leaves the sum in acc; dst (if non-zero) receives
// float32(sum·s).
func (b *Backend) wsum(acc, dst DevicePtr, w []float64, xs []DevicePtr, n int, s float64, readAcc, writeAcc bool) error {
	vector := dst%16 == 0
	for _, x := range xs {
		vector = vector && x%16 == 0
	}
	groups := max((len(xs)+maxTerms-1)/maxTerms, 1)
	for g := range groups {
		lo, hi := g*maxTerms, min((g+1)*maxTerms, len(xs))
		flags := int32(0)
		if vector {
			flags |= flagVector
		}
		if readAcc || g > 0 {
			flags |= flagReadAcc
		}
		last := g == groups-1
		if writeAcc || !last {
			flags |= flagWriteAcc
		}
		if last && dst != 0 {
			flags |= flagWriteDst
		}
		args := make([]any, 0, 6+2*maxTerms)
		args = append(args, acc, dst, flags, int32(hi-lo), int64(n), s)
		for j := range maxTerms {
			if lo+j < hi {
				args = append(args, xs[lo+j])
			} else {
				args = append(args, DevicePtr(0))
			}
		}
		for j := range maxTerms {
			if lo+j < hi {
				args = append(args, w[lo+j])
			} else {
				args = append(args, 0.0)
			}
		}
		if err := b.c.Launch("agg_wsum16", grid1((int64(n)+3)/4), block1, 0, args...); err != nil {
			return err
		}
	}
	return nil
}

// inRows returns the device addresses of the first k rows of b.in.
func (b *Backend) inRows(k, ld int) []DevicePtr {
	ps := make([]DevicePtr, k)
	for i := range ps {
		ps[i] = ptr(b.in.p, int64(i)*int64(ld)*4)
	}
	return ps
}

// WeightedMeanDevice queues FedAvg's weighted mean over device memory on
// the Context's stream: dst[i] = float32(acc·s) with acc = Σ_k w[k]·xs[k][i]
// from +0, exactly as kernels.WeightedMeaner specifies, for n float32
// elements. It does not wait (Context.Sync does); dst and every xs[k] must
// hold n elements.
func (b *Backend) WeightedMeanDevice(dst DevicePtr, w []float64, xs []DevicePtr, n int, s float64) error {
	if len(w) != len(xs) {
		return fmt.Errorf("cuda: WeightedMeanDevice: len(w) = %d, len(xs) = %d", len(w), len(xs))
	}
	if n <= 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var acc DevicePtr
	if len(xs) > maxTerms {
		if err := b.ensure(&b.acc, int64(n)*8); err != nil {
			return err
		}
		acc = b.acc.p
	}
	return b.wsum(acc, dst, w, xs, n, s, false, false)
}

// WeightedMean implements kernels.WeightedMeaner.
func (b *Backend) WeightedMean(dst []float32, w []float64, xs [][]float32, s float64) {
	kernels.CheckWeightedMean(dst, w, xs)
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(dst)
	ld := b.rowLen(len(xs), n)
	for off := 0; off < n; off += ld {
		m := min(ld, n-off)
		if err := b.weightedMeanChunk(dst[off:off+m], w, xs, off, ld, s); err != nil {
			b.fail("WeightedMean", err)
			kernels.WeightedMean(kernels.Default(), dst[off:], w, tail(xs, off), s)
			return
		}
	}
}

func (b *Backend) weightedMeanChunk(dst []float32, w []float64, xs [][]float32, off, ld int, s float64) error {
	m := len(dst)
	if err := b.rowsIn(xs, off, m, ld); err != nil {
		return err
	}
	if err := b.ensure(&b.out, int64(ld)*4); err != nil {
		return err
	}
	var acc DevicePtr
	if len(xs) > maxTerms {
		if err := b.ensure(&b.acc, int64(ld)*8); err != nil {
			return err
		}
		acc = b.acc.p
	}
	if err := b.wsum(acc, b.out.p, w, b.inRows(len(xs), ld), m, s, false, false); err != nil {
		return err
	}
	return b.c.DtoH(unsafe.Pointer(&dst[0]), b.out.p, int64(m)*4)
}

// WeightedSum implements kernels.Backend.
func (b *Backend) WeightedSum(acc []float64, w []float64, xs [][]float32) {
	kernels.CheckWeightedSum(acc, w, xs)
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(acc)
	if len(xs) == 0 {
		return
	}
	ld := b.rowLen(len(xs)+2, n) // the float64 accumulator weighs two rows
	for off := 0; off < n; off += ld {
		m := min(ld, n-off)
		if err := b.weightedSumChunk(acc[off:off+m], w, xs, off, ld); err != nil {
			b.fail("WeightedSum", err)
			kernels.Default().WeightedSum(acc[off:], w, tail(xs, off))
			return
		}
	}
}

func (b *Backend) weightedSumChunk(acc []float64, w []float64, xs [][]float32, off, ld int) error {
	m := len(acc)
	if err := b.rowsIn(xs, off, m, ld); err != nil {
		return err
	}
	if err := b.ensure(&b.acc, int64(ld)*8); err != nil {
		return err
	}
	if err := b.c.HtoD(b.acc.p, unsafe.Pointer(&acc[0]), int64(m)*8); err != nil {
		return err
	}
	if err := b.wsum(b.acc.p, 0, w, b.inRows(len(xs), ld), m, 0, true, true); err != nil {
		return err
	}
	return b.c.DtoH(unsafe.Pointer(&acc[0]), b.acc.p, int64(m)*8)
}

// Store implements kernels.Backend.
func (b *Backend) Store(dst []float32, acc []float64, s float64) {
	if len(dst) != len(acc) {
		panic(fmt.Sprintf("kernels/cuda: Store: len(dst) = %d, len(acc) = %d", len(dst), len(acc)))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(dst)
	ld := b.rowLen(3, n)
	for off := 0; off < n; off += ld {
		m := min(ld, n-off)
		if err := b.storeChunk(dst[off:off+m], acc[off:off+m], s); err != nil {
			b.fail("Store", err)
			kernels.Default().Store(dst[off:], acc[off:], s)
			return
		}
	}
}

func (b *Backend) storeChunk(dst []float32, acc []float64, s float64) error {
	m := int64(len(dst))
	if err := b.ensure(&b.acc, m*8); err != nil {
		return err
	}
	if err := b.ensure(&b.out, m*4); err != nil {
		return err
	}
	if err := b.c.HtoD(b.acc.p, unsafe.Pointer(&acc[0]), m*8); err != nil {
		return err
	}
	if err := b.c.Launch("agg_store", grid1(m), block1, 0, b.out.p, b.acc.p, s, m); err != nil {
		return err
	}
	return b.c.DtoH(unsafe.Pointer(&dst[0]), b.out.p, m*4)
}

// Scale implements kernels.Backend.
func (b *Backend) Scale(x []float32, s float32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(x)
	ld := b.rowLen(1, n)
	for off := 0; off < n; off += ld {
		m := int64(min(ld, n-off))
		err := b.oneRowIn(x[off:], m)
		if err == nil {
			err = b.c.Launch("agg_scale", grid1(m), block1, 0, b.in.p, s, m)
		}
		if err == nil {
			err = b.c.DtoH(unsafe.Pointer(&x[off]), b.in.p, m*4)
		}
		if err != nil {
			b.fail("Scale", err)
			kernels.Default().Scale(x[off:], s)
			return
		}
	}
}

// oneRowIn copies x[:m] to b.in.
func (b *Backend) oneRowIn(x []float32, m int64) error {
	if err := b.ensure(&b.in, m*4); err != nil {
		return err
	}
	return b.c.HtoD(b.in.p, unsafe.Pointer(&x[0]), m*4)
}

// SquaredNorm implements kernels.Backend: the GPU computes the block
// partials, the host adds them in block order.
func (b *Backend) SquaredNorm(x []float32) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(x)
	ld := b.rowLen(1, n)
	var total float64
	parts := make([]float64, (ld+kernels.ReduceBlock-1)/kernels.ReduceBlock)
	for off := 0; off < n; off += ld {
		m := int64(min(ld, n-off))
		nb := (m + kernels.ReduceBlock - 1) / kernels.ReduceBlock
		err := b.oneRowIn(x[off:], m)
		if err == nil {
			err = b.ensure(&b.aux, nb*8)
		}
		if err == nil {
			err = b.c.Launch("agg_sqnorm_blocks", grid1(nb), block1, 0, b.aux.p, b.in.p, m, int64(kernels.ReduceBlock))
		}
		if err == nil {
			err = b.c.DtoH(unsafe.Pointer(&parts[0]), b.aux.p, nb*8)
		}
		if err != nil {
			b.fail("SquaredNorm", err)
			return kernels.Default().SquaredNorm(x)
		}
		for _, p := range parts[:nb] {
			total += p
		}
	}
	return total
}

// PairwiseSquaredDistances implements kernels.Backend: the GPU computes
// each pair's block partials, the host adds them in block order.
func (b *Backend) PairwiseSquaredDistances(d []float64, xs [][]float32) {
	n, m := len(xs), kernels.CheckPairwise(d, xs)
	if n < 2 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	totals, err := b.pairwise(xs, m)
	if err != nil {
		b.fail("PairwiseSquaredDistances", err)
		kernels.Default().PairwiseSquaredDistances(d, xs)
		return
	}
	p := 0
	for i := range n {
		for j := i + 1; j < n; j++ {
			d[i*n+j] += totals[p]
			d[j*n+i] += totals[p]
			p++
		}
	}
}

// pairwise returns the squared distance of every pair i < j (in that
// order) over all m coordinates.
func (b *Backend) pairwise(xs [][]float32, m int) ([]float64, error) {
	n := len(xs)
	pairs := make([]int32, 0, n*(n-1))
	for i := range n {
		for j := i + 1; j < n; j++ {
			pairs = append(pairs, int32(i), int32(j))
		}
	}
	np := int64(len(pairs) / 2)
	totals := make([]float64, np)
	if m == 0 {
		return totals, nil
	}
	ld := b.rowLen(n, m)
	nbMax := int64((ld + kernels.ReduceBlock - 1) / kernels.ReduceBlock)
	pairBytes := int64(len(pairs)) * 4
	pairBytes = (pairBytes + 255) &^ 255
	if err := b.ensure(&b.aux, pairBytes+np*nbMax*8); err != nil {
		return nil, err
	}
	if err := b.c.HtoD(b.aux.p, unsafe.Pointer(&pairs[0]), int64(len(pairs))*4); err != nil {
		return nil, err
	}
	partsDev := ptr(b.aux.p, pairBytes)
	parts := make([]float64, np*nbMax)
	for off := 0; off < m; off += ld {
		mm := int64(min(ld, m-off))
		nb := (mm + kernels.ReduceBlock - 1) / kernels.ReduceBlock
		if err := b.rowsIn(xs, off, int(mm), ld); err != nil {
			return nil, err
		}
		if err := b.c.Launch("agg_pair_blocks", grid1(np*nb), block1, 0,
			partsDev, b.in.p, int64(ld), b.aux.p, int32(np), mm, int64(kernels.ReduceBlock)); err != nil {
			return nil, err
		}
		if err := b.c.DtoH(unsafe.Pointer(&parts[0]), partsDev, np*nb*8); err != nil {
			return nil, err
		}
		for p := range np {
			for _, v := range parts[p*nb : (p+1)*nb] {
				totals[p] += v
			}
		}
	}
	return totals, nil
}

// Median implements kernels.Backend.
func (b *Backend) Median(dst []float32, xs [][]float32) {
	kernels.CheckCoordinatewise("Median", dst, xs)
	b.orderStat("Median", dst, xs, -1)
}

// TrimmedMean implements kernels.Backend.
func (b *Backend) TrimmedMean(dst []float32, xs [][]float32, k int) {
	kernels.CheckCoordinatewise("TrimmedMean", dst, xs)
	kernels.CheckTrim(k, len(xs))
	b.orderStat("TrimmedMean", dst, xs, k)
}

// orderStat runs agg_order_stat (trim < 0: median).
func (b *Backend) orderStat(method string, dst []float32, xs [][]float32, trim int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(dst)
	ld := b.rowLen(len(xs)+1, n)
	for off := 0; off < n; off += ld {
		m := min(ld, n-off)
		err := b.rowsIn(xs, off, m, ld)
		if err == nil {
			err = b.ensure(&b.out, int64(m)*4)
		}
		if err == nil {
			err = b.c.Launch("agg_order_stat", grid1(int64(m)), block1, 0,
				b.out.p, b.in.p, int64(ld), int32(len(xs)), int64(m), int32(trim))
		}
		if err == nil {
			err = b.c.DtoH(unsafe.Pointer(&dst[off]), b.out.p, int64(m)*4)
		}
		if err != nil {
			b.fail(method, err)
			if trim < 0 {
				kernels.Default().Median(dst[off:], tail(xs, off))
			} else {
				kernels.Default().TrimmedMean(dst[off:], tail(xs, off), trim)
			}
			return
		}
	}
}

// quantChunk returns the elements per chunk for block-quantization: whole
// blocks, about the budget's worth of input.
func (b *Backend) quantChunk(block, n int) int {
	per := max(b.budget/4/int64(block), 1) * int64(block)
	return int(min(per, int64(n)))
}

// QuantizeInt8 implements kernels.Backend.
func (b *Backend) QuantizeInt8(q []int8, scales []float32, x []float32, block int) {
	kernels.CheckQuant("QuantizeInt8", len(x), len(q), len(scales), block)
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(x)
	ld := b.quantChunk(block, n)
	for off := 0; off < n; off += ld {
		m := int64(min(ld, n-off))
		nb := (m + int64(block) - 1) / int64(block)
		if err := b.quantizeChunk(q[off:], scales[off/block:], x[off:], m, nb, int64(block)); err != nil {
			b.fail("QuantizeInt8", err)
			kernels.Default().QuantizeInt8(q[off:], scales[off/block:], x[off:], block)
			return
		}
	}
}

func (b *Backend) quantizeChunk(q []int8, scales, x []float32, m, nb, block int64) error {
	if err := b.oneRowIn(x, m); err != nil {
		return err
	}
	if err := b.ensure(&b.aux, nb*4); err != nil {
		return err
	}
	if err := b.ensure(&b.out, m); err != nil {
		return err
	}
	if err := b.c.Launch("agg_qscale", grid1(nb*32), block1, 0, b.aux.p, b.in.p, m, block); err != nil {
		return err
	}
	if err := b.c.Launch("agg_quant", grid1(m), block1, 0, b.out.p, b.in.p, b.aux.p, m, block); err != nil {
		return err
	}
	if err := b.c.DtoH(unsafe.Pointer(&q[0]), b.out.p, m); err != nil {
		return err
	}
	return b.c.DtoH(unsafe.Pointer(&scales[0]), b.aux.p, nb*4)
}

// DequantizeInt8 implements kernels.Backend.
func (b *Backend) DequantizeInt8(x []float32, q []int8, scales []float32, block int) {
	kernels.CheckQuant("DequantizeInt8", len(q), len(x), len(scales), block)
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(q)
	ld := b.quantChunk(block, n)
	for off := 0; off < n; off += ld {
		m := int64(min(ld, n-off))
		nb := (m + int64(block) - 1) / int64(block)
		if err := b.dequantizeChunk(x[off:], q[off:], scales[off/block:], m, nb, int64(block)); err != nil {
			b.fail("DequantizeInt8", err)
			kernels.Default().DequantizeInt8(x[off:], q[off:], scales[off/block:], block)
			return
		}
	}
}

func (b *Backend) dequantizeChunk(x []float32, q []int8, scales []float32, m, nb, block int64) error {
	if err := b.ensure(&b.in, m*4); err != nil {
		return err
	}
	if err := b.ensure(&b.aux, nb*4); err != nil {
		return err
	}
	if err := b.ensure(&b.out, m); err != nil {
		return err
	}
	if err := b.c.HtoD(b.out.p, unsafe.Pointer(&q[0]), m); err != nil {
		return err
	}
	if err := b.c.HtoD(b.aux.p, unsafe.Pointer(&scales[0]), nb*4); err != nil {
		return err
	}
	if err := b.c.Launch("agg_dequant", grid1(m), block1, 0, b.in.p, b.out.p, b.aux.p, m, block); err != nil {
		return err
	}
	return b.c.DtoH(unsafe.Pointer(&x[0]), b.in.p, m*4)
}

// FirstNonFinite implements kernels.Backend.
func (b *Backend) FirstNonFinite(x []float32) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(x)
	ld := b.rowLen(1, n)
	for off := 0; off < n; off += ld {
		m := int64(min(ld, n-off))
		first := uint64(math.MaxUint64)
		err := b.oneRowIn(x[off:], m)
		if err == nil {
			err = b.ensure(&b.aux, 8)
		}
		if err == nil {
			err = b.c.HtoD(b.aux.p, unsafe.Pointer(&first), 8)
		}
		if err == nil {
			err = b.c.Launch("agg_first_nonfinite", grid1(m), block1, 0, b.aux.p, b.in.p, m)
		}
		if err == nil {
			err = b.c.DtoH(unsafe.Pointer(&first), b.aux.p, 8)
		}
		if err != nil {
			b.fail("FirstNonFinite", err)
			if i := kernels.Default().FirstNonFinite(x[off:]); i >= 0 {
				return off + i
			}
			return -1
		}
		if first != math.MaxUint64 {
			return off + int(first)
		}
	}
	return -1
}

// tail returns every xs[k][off:].
func tail(xs [][]float32, off int) [][]float32 {
	t := make([][]float32, len(xs))
	for k, x := range xs {
		t[k] = x[off:]
	}
	return t
}
