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
// submitting goroutine and the workers that join the job take chunks until
// none is left. Each Host reuses one job; every use is a new generation,
// and the pool's queue carries tickets (job, generation): a worker joins
// only while that generation is open, so a ticket that waited in the queue
// past its job's end is dropped, and the submitter waits only for the
// workers that joined, never for one that is busy elsewhere or asleep.
type job struct {
	task  rangeTask
	n     int
	chunk int
	next  atomic.Int64

	mu   sync.Mutex // guards gen and open; held while a worker joins
	gen  uint64
	open bool
	held sync.WaitGroup // workers that joined this generation
}

// ticket asks a worker to join generation gen of job j.
type ticket struct {
	j   *job
	gen uint64
}

// join registers a worker with generation gen if it is still open.
func (j *job) join(gen uint64) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.open || j.gen != gen {
		return false
	}
	j.held.Add(1)
	return true
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
	poolJobs chan ticket
	poolSize int // worker goroutines (cores − 1)
)

// startPool starts GOMAXPROCS−1 workers.
func startPool() {
	poolSize = runtime.GOMAXPROCS(0) - 1
	poolJobs = make(chan ticket, max(poolSize, 1))
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
		var t ticket
		for i := 0; i < workerSpins && t.j == nil; i++ {
			select {
			case t = <-poolJobs:
			default:
				runtime.Gosched()
			}
		}
		if t.j == nil {
			t = <-poolJobs
		}
		if t.j.join(t.gen) {
			t.j.work()
			t.j.held.Done()
		}
	}
}

// parallelFor runs task over [0, n) split into up to parts contiguous
// chunks (parts ≥ 2), on the calling goroutine and whichever of the pool's
// workers join in time, using j (idle: not in use by another parallelFor).
// A task may itself call parallelFor with another job: the submitter never
// waits for a worker that has not joined, so nesting cannot deadlock.
func parallelFor(j *job, n, parts int, task rangeTask) {
	poolOnce.Do(startPool)
	parts = min(parts, n)
	if poolSize == 0 || parts < 2 {
		task.run(0, n)
		return
	}
	j.mu.Lock()
	j.task, j.n, j.chunk = task, n, (n+parts-1)/parts
	j.next.Store(0)
	j.gen++
	j.open = true
	gen := j.gen
	j.mu.Unlock()
	for range min(poolSize, parts-1) {
		select {
		case poolJobs <- ticket{j, gen}:
			continue
		default:
		}
		// The queue is full, most likely of tickets whose loops ended
		// before a worker came: drop one and try once more (a live ticket
		// of another device's loop, if dropped, only leaves that device
		// doing more of its loop itself).
		select {
		case <-poolJobs:
		default:
		}
		select {
		case poolJobs <- ticket{j, gen}:
		default:
		}
	}
	j.work()
	j.mu.Lock()
	j.open = false
	j.mu.Unlock()
	j.held.Wait()
	j.task = nil
}
