package kernels

import (
	"sync"
	"sync/atomic"
	"testing"
)

// countTask counts how often each index is run.
type countTask struct{ hits []atomic.Int32 }

func (c *countTask) Run(_, lo, hi int) {
	for i := lo; i < hi; i++ {
		c.hits[i].Add(1)
	}
}

// nestTask runs a whole loop of inner (on its own Job) per index.
type nestTask struct {
	jobs  []Job
	inner []countTask
}

func (t *nestTask) Run(_, lo, hi int) {
	for i := lo; i < hi; i++ {
		n := len(t.inner[i].hits)
		t.jobs[i].For(n, (n+3)/4, 3, &t.inner[i])
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
			var j Job
			for r := range rounds {
				ct := &countTask{hits: make([]atomic.Int32, n)}
				parts := 2 + (c+r)%5
				j.For(n, (n+parts-1)/parts, parts-1, ct)
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

	nt := &nestTask{jobs: make([]Job, 8), inner: make([]countTask, 8)}
	for i := range nt.inner {
		nt.inner[i].hits = make([]atomic.Int32, 40)
	}
	var outer Job
	for range 50 {
		outer.For(len(nt.jobs), 2, 3, nt)
	}
	for i := range nt.inner {
		for k := range nt.inner[i].hits {
			if got := nt.inner[i].hits[k].Load(); got != 50 {
				t.Fatalf("nested loop %d index %d ran %d times, want 50", i, k, got)
			}
		}
	}
}

// slotTask records the largest slot it ran as.
type slotTask struct{ top atomic.Int32 }

func (s *slotTask) Run(slot, lo, hi int) {
	for {
		old := s.top.Load()
		if int32(slot) <= old || s.top.CompareAndSwap(old, int32(slot)) {
			return
		}
	}
}

// A loop never hands out more slots than its caller's plus helpers.
func TestForSlots(t *testing.T) {
	var j Job
	for helpers := range 4 {
		for range 200 {
			st := &slotTask{}
			j.For(64, 1, helpers, st)
			if got := int(st.top.Load()); got > helpers {
				t.Fatalf("helpers %d: slot %d ran", helpers, got)
			}
		}
	}
}
