package model

import (
	"runtime"
	"testing"
)

// TestRunnerCacheGrows: the KV cache and rotary tables grow with the
// sequence (a long context costs nothing up front), and results are the
// same whether the tokens come one by one (the cache grows several times)
// or in one block.
func TestRunnerCacheGrows(t *testing.T) {
	c := tinyConfig()
	c.MaxPositionEmbeddings = 1 << 22 // a cache sized for 4M positions would be 2 GiB
	m, err := New(c, 5)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := NewRunner(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Forward([]int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if a := after.TotalAlloc - before.TotalAlloc; a > 1<<20 {
		t.Errorf("a runner for a 4M-position context allocated %d bytes for 3 tokens", a)
	}

	c.MaxPositionEmbeddings = 300
	m, _ = New(c, 5)
	ids := testIDs(260, c.VocabSize, 5)
	want := refLogProbs(m, nil, ids)
	for _, stepwise := range []bool{false, true} {
		if d := maxDiff(runnerLogProbs(t, m, ids, stepwise), want); d > 1e-4 {
			t.Errorf("stepwise=%v: runner differs from the reference by %g over 260 positions", stepwise, d)
		}
	}
}
