package kernels

import (
	"runtime"
	"sync/atomic"
)

// The CPU backend splits each call into fixed chunks and hands them to a
// bounded set of long-lived worker goroutines. A call fills a task (taken
// from a free list, so steady-state calls allocate nothing), offers it to
// idle workers without blocking, works through the chunks itself too, and
// waits for the workers that joined. Which participant runs which chunk does
// not change any result: every chunk writes only its own outputs (or its own
// block partials, combined in block order afterwards).

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

	next    atomic.Int64 // next chunk to claim
	pending atomic.Int32 // participants still running (the caller counts one)
	slots   atomic.Int32 // participant slots handed out; 0 is the caller's
	found   atomic.Int64 // FirstNonFinite: smallest index found so far
	done    chan struct{}

	partials []float64   // reductions: one partial per block (per pair)
	scratch  [][]uint32  // per participant slot: sort keys
	accs     [][]float64 // per participant slot: WeightedMean's accumulator
}

func (t *task) release() {
	t.acc, t.w, t.xs, t.dst, t.x, t.d, t.q, t.scales = nil, nil, nil, nil, nil, nil, nil, nil
}

// pool owns the worker goroutines. The workers hold only the channel, so a
// CPU that becomes unreachable closes it (see NewCPU) and they exit.
type pool struct {
	threads int
	work    chan *task
	free    chan *task
}

func newPool(threads int) *pool {
	p := &pool{
		threads: threads,
		work:    make(chan *task, threads),
		free:    make(chan *task, 4*threads),
	}
	for range threads - 1 {
		go worker(p.work)
	}
	return p
}

func worker(work <-chan *task) {
	for t := range work {
		t.participate(int(t.slots.Add(1)))
		if t.pending.Add(-1) == 0 {
			t.done <- struct{}{}
		}
	}
}

func (p *pool) get() *task {
	select {
	case t := <-p.free:
		return t
	default:
	}
	t := &task{done: make(chan struct{}, 1)}
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

// run executes t's nchunks chunks, in parallel where there is more than one.
func (p *pool) run(t *task) {
	t.next.Store(0)
	t.slots.Store(0)
	if t.nchunks <= 1 || p.threads == 1 {
		for c := range t.nchunks {
			t.do(c, 0)
		}
		return
	}
	t.pending.Store(1)
	helpers := min(p.threads-1, t.nchunks-1)
	for range helpers {
		t.pending.Add(1)
		select {
		case p.work <- t:
			continue
		default:
			// Every worker is busy (other calls): do the rest ourselves.
		}
		t.pending.Add(-1)
		break
	}
	t.participate(0)
	if t.pending.Add(-1) != 0 {
		<-t.done
	}
}

// participate claims chunks until none is left. slot identifies the
// participant, for per-participant scratch space.
func (t *task) participate(slot int) {
	for {
		c := int(t.next.Add(1)) - 1
		if c >= t.nchunks {
			return
		}
		t.do(c, slot)
	}
}

// chunkCount returns how many chunks of size chunk cover n units.
func chunkCount(n, chunk int) int { return (n + chunk - 1) / chunk }

func defaultThreads() int { return runtime.GOMAXPROCS(0) }
