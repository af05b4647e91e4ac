package engine

import (
	"sync"
	"sync/atomic"
	"testing"
)

// countTask counts how often each index is run.
type countTask struct{ hits []atomic.Int32 }

func (c *countTask) run(lo, hi int) {
	for i := lo; i < hi; i++ {
		c.hits[i].Add(1)
	}
}

// nestTask runs a whole parallelFor of inner (on its own job) per index.
type nestTask struct {
	jobs  []job
	inner []countTask
}

func (t *nestTask) run(lo, hi int) {
	for i := lo; i < hi; i++ {
		parallelFor(&t.jobs[i], len(t.inner[i].hits), 4, &t.inner[i])
	}
}

// Several devices' loops at once, and loops inside loops, each run every
// index exactly once and return (a submitter never waits for a worker busy
// elsewhere: before generations, nesting could deadlock).
func TestParallelForConcurrentAndNested(t *testing.T) {
	const callers, rounds, n = 4, 300, 50
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var j job
			for r := range rounds {
				ct := &countTask{hits: make([]atomic.Int32, n)}
				parallelFor(&j, n, 2+(c+r)%5, ct)
				for i := range ct.hits {
					if got := ct.hits[i].Load(); got != 1 {
						t.Errorf("caller %d round %d: index %d ran %d times", c, r, i, got)
						return
					}
				}
			}
		}()
	}
	wg.Wait()

	nt := &nestTask{jobs: make([]job, 8), inner: make([]countTask, 8)}
	for i := range nt.inner {
		nt.inner[i].hits = make([]atomic.Int32, 40)
	}
	var outer job
	for range 50 {
		parallelFor(&outer, len(nt.jobs), 4, nt)
	}
	for i := range nt.inner {
		for k := range nt.inner[i].hits {
			if got := nt.inner[i].hits[k].Load(); got != 50 {
				t.Fatalf("nested loop %d index %d ran %d times, want 50", i, k, got)
			}
		}
	}
}
