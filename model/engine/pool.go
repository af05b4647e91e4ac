package engine

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// The Host device spreads large operations over the CPU cores with one
// process-wide pool of worker goroutines, started on first use (sized by
// GOMAXPROCS then) and kept for the life of the process: spawning
// goroutines per operation costs more than the small operations of a
// training step take.
//
// Work is always split over independent output rows or elements: how it is
// split never changes what any element's result is, so results do not
// depend on the number of cores or on scheduling.

// rangeTask is one parallel loop body: run does the work of [lo, hi).
// Each Host keeps one value of every task type and passes a pointer to it,
// so that a step allocates nothing.
type rangeTask interface {
	run(lo, hi int)
}

// job is one parallel loop: task over [0, n) in chunks of size chunk. The
// submitting goroutine and the workers it hands the job to take chunks
// until none is left; a worker that arrives late finds none. Each Host
// reuses one job: the submitter waits until every worker it handed the job
// to is done with it.
type job struct {
	task  rangeTask
	n     int
	chunk int
	next  atomic.Int64
	held  sync.WaitGroup // workers holding the job
}

// work takes chunks until the job has none left.
func (j *job) work() {
	for {
		lo := int(j.next.Add(int64(j.chunk))) - j.chunk
		if lo >= j.n {
			return
		}
		j.task.run(lo, min(lo+j.chunk, j.n))
	}
}

var (
	poolOnce sync.Once
	poolJobs chan *job
	poolSize int // worker goroutines (cores − 1)
)

// startPool starts GOMAXPROCS−1 workers.
func startPool() {
	poolSize = runtime.GOMAXPROCS(0) - 1
	poolJobs = make(chan *job, max(poolSize, 1))
	for i := 0; i < poolSize; i++ {
		go worker()
	}
}

// workerSpins is how many times an idle worker polls for a job (some
// hundreds of microseconds) before it blocks: a training step issues its
// operations back to back, and waking a blocked worker costs the kernel
// more than many small operations take.
const workerSpins = 2000

func worker() {
	for {
		var j *job
		for i := 0; i < workerSpins && j == nil; i++ {
			select {
			case j = <-poolJobs:
			default:
				runtime.Gosched()
			}
		}
		if j == nil {
			j = <-poolJobs
		}
		j.work()
		j.held.Done()
	}
}

// parallelFor runs task over [0, n) split into up to parts contiguous
// chunks (parts ≥ 2), on the calling goroutine and the pool's workers,
// using j (idle: not in use by another parallelFor).
func parallelFor(j *job, n, parts int, task rangeTask) {
	poolOnce.Do(startPool)
	parts = min(parts, n)
	if poolSize == 0 || parts < 2 {
		task.run(0, n)
		return
	}
	j.task, j.n, j.chunk = task, n, (n+parts-1)/parts
	j.next.Store(0)
	helpers := min(poolSize, parts-1)
	j.held.Add(helpers)
	for i := 0; i < helpers; i++ {
		select {
		case poolJobs <- j:
		default: // every worker is busy (another device's job): do more here
			j.held.Done()
		}
	}
	j.work()
	j.held.Wait()
	j.task = nil
}
