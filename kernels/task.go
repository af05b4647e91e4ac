package kernels

import (
	"runtime"
	"sync/atomic"
)

// The CPU backend splits each call into fixed chunks and runs them on the
// worker pool (pool.go), at most threads participants at once. A call
// fills a task (taken from a free list, so steady-state calls allocate
// nothing) and runs it with the task's Job: idle workers join, the caller
// works through the chunks too, and waits for those that joined. Which
// participant runs which chunk does not change any result: every chunk
// writes only its own outputs (or its own block partials, combined in block
// order afterwards).

type opKind uint8

const (
	opWeightedSum opKind = iota
	opWeightedMean
	opStore
	opScale
	opSquaredNorm
	opPairwise
	opMedian
	opTrimmedMean
	opQuantize
	opDequantize
	opFirstNonFinite
)

// task is one call's arguments and the state its participants share.
type task struct {
	op      opKind
	acc     []float64
	w       []float64
	xs      [][]float32
	dst     []float32
	x       []float32
	d       []float64
	q       []int8
	scales  []float32
	s64     float64
	s32     float32
	k       int
	block   int
	n       int // elements (or blocks, or coordinates) the op covers
	chunk   int // units per chunk
	nchunks int

	job   Job          // runs the chunks on the worker pool
	found atomic.Int64 // FirstNonFinite: smallest index found so far

	partials []float64   // reductions: one partial per block (per pair)
	scratch  [][]uint32  // per participant slot: sort keys
	accs     [][]float64 // per participant slot: WeightedMean's accumulator
}

func (t *task) release() {
	t.acc, t.w, t.xs, t.dst, t.x, t.d, t.q, t.scales = nil, nil, nil, nil, nil, nil, nil, nil
}

// pool is a CPU backend's share of the worker pool: how many participants
// a call may use, and a free list of tasks.
type pool struct {
	threads int
	free    chan *task
}

func newPool(threads int) *pool {
	return &pool{threads: threads, free: make(chan *task, 4*threads)}
}

func (p *pool) get() *task {
	select {
	case t := <-p.free:
		return t
	default:
	}
	t := &task{}
	t.scratch = make([][]uint32, p.threads)
	t.accs = make([][]float64, p.threads)
	return t
}

func (p *pool) put(t *task) {
	t.release()
	select {
	case p.free <- t:
	default:
	}
}

// run executes t's nchunks chunks, in parallel where there is more than one
// and threads allow.
func (p *pool) run(t *task) {
	t.job.For(t.nchunks, 1, p.threads-1, t)
}

// Run does chunks [lo, hi) as participant slot (Task).
func (t *task) Run(slot, lo, hi int) {
	for c := lo; c < hi; c++ {
		t.do(c, slot)
	}
}

// chunkCount returns how many chunks of size chunk cover n units.
func chunkCount(n, chunk int) int { return (n + chunk - 1) / chunk }

func defaultThreads() int { return runtime.GOMAXPROCS(0) }
