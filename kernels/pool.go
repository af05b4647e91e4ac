package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// The worker pool: one process-wide set of worker goroutines, started on
// first use (GOMAXPROCS−1 of them, sized then) and kept for the life of
// the process, that the CPU backend here and model/engine's Host device
// both spread their loops over. Spawning goroutines per operation costs
// more than the small operations of a training step take.
//
// Work is always split over independent outputs: which participant runs
// which chunk never changes any result, so results do not depend on the
// number of cores or on scheduling.

// Task is the body of a parallel loop: Run does the units [lo, hi) as
// participant slot (0 for the goroutine that called For, 1… for the pool
// workers that joined, each slot used by one goroutine at a time), so a
// task can keep per-participant scratch space.
type Task interface {
	Run(slot, lo, hi int)
}

// Job is one parallel loop, reused from call to call (the zero value is
// ready; a Job must not be copied after first use, nor used by two For
// calls at once). The submitting goroutine and the workers that join take
// chunks until none is left. Every use is a new generation, and the pool's
// queue carries tickets (job, generation): a worker joins only while that
// generation is open, so a ticket that waited in the queue past its loop's
// end is dropped, and the submitter waits only for the workers that
// joined, never for one that is busy elsewhere or asleep. So loops may run
// inside loops (each with its own Job) without deadlock.
type Job struct {
	task  Task
	n     int
	chunk int
	next  atomic.Int64

	mu     sync.Mutex // guards gen, open and joined; held while a worker joins
	gen    uint64
	open   bool
	joined int
	held   sync.WaitGroup // workers that joined this generation
}

// ticket asks a worker to join generation gen of job j.
type ticket struct {
	j   *Job
	gen uint64
}

// join registers a worker with generation gen if it is still open and
// returns its slot (0 when it may not join).
func (j *Job) join(gen uint64) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.open || j.gen != gen {
		return 0
	}
	j.held.Add(1)
	j.joined++
	return j.joined
}

// work takes chunks until the job has none left.
func (j *Job) work(slot int) {
	for {
		lo := int(j.next.Add(int64(j.chunk))) - j.chunk
		if lo >= j.n {
			return
		}
		j.task.Run(slot, lo, min(lo+j.chunk, j.n))
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
		go poolWorker()
	}
}

// PoolSize returns the number of the pool's worker goroutines (GOMAXPROCS−1
// when the pool started), starting the pool if it has not started.
func PoolSize() int {
	poolOnce.Do(startPool)
	return poolSize
}

// workerSpins is how many times an idle worker polls for a job (some
// hundreds of microseconds) before it blocks: a training step issues its
// operations back to back, and waking a blocked worker costs the kernel
// more than many small operations take.
const workerSpins = 2000

func poolWorker() {
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
		if slot := t.j.join(t.gen); slot > 0 {
			t.j.work(slot)
			t.j.held.Done()
		}
	}
}

// For runs task over the units [0, n) in chunks of chunk units (chunk ≥ 1)
// on the calling goroutine and up to helpers of the pool's workers, those
// that join in time (so task sees slots 0 to helpers at most). It returns
// when every unit has run.
func (j *Job) For(n, chunk, helpers int, task Task) {
	poolOnce.Do(startPool)
	chunk = max(chunk, 1)
	helpers = min(helpers, poolSize, (n+chunk-1)/chunk-1)
	if helpers < 1 {
		if n > 0 {
			task.Run(0, 0, n)
		}
		return
	}
	j.mu.Lock()
	j.task, j.n, j.chunk = task, n, chunk
	j.next.Store(0)
	j.gen++
	j.open = true
	j.joined = 0
	gen := j.gen
	j.mu.Unlock()
	for range helpers {
		select {
		case poolJobs <- ticket{j, gen}:
			continue
		default:
		}
		// The queue is full, most likely of tickets whose loops ended
		// before a worker came: drop one and try once more (a live ticket
		// of another loop, if dropped, only leaves its submitter doing more
		// of its loop itself).
		select {
		case <-poolJobs:
		default:
		}
		select {
		case poolJobs <- ticket{j, gen}:
		default:
		}
	}
	j.work(0)
	j.mu.Lock()
	j.open = false
	j.mu.Unlock()
	j.held.Wait()
	j.task = nil
}
