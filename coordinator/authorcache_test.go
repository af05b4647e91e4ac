package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// TestAuthorCache: authors are remembered, misses only for authorMissTTL,
// and an author found later replaces a cached miss; both maps stay
// bounded.
func TestAuthorCache(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	a := &ledger.UpdateSubmission{JobID: "j", Round: 1, Trainer: "t", Height: 7}
	for _, tc := range []struct {
		name      string
		steps     func(c *authorCache)
		at        time.Duration // when get asks, after t0
		wantKnown bool
		wantNil   bool
	}{
		{"empty", func(c *authorCache) {}, 0, false, true},
		{"author", func(c *authorCache) { c.put("d", a, t0) }, time.Hour, true, false},
		{"fresh miss", func(c *authorCache) { c.put("d", nil, t0) }, authorMissTTL - time.Nanosecond, true, true},
		{"expired miss", func(c *authorCache) { c.put("d", nil, t0) }, authorMissTTL, false, true},
		{"miss then author", func(c *authorCache) { c.put("d", nil, t0); c.put("d", a, t0) }, 0, true, false},
		{"other digest", func(c *authorCache) { c.put("e", a, t0); c.put("f", nil, t0) }, 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c authorCache
			tc.steps(&c)
			got, known := c.get("d", t0.Add(tc.at))
			if known != tc.wantKnown || (got == nil) != tc.wantNil {
				t.Fatalf("get = %+v, %v; want known %v, nil %v", got, known, tc.wantKnown, tc.wantNil)
			}
			if got != nil && *got != *a {
				t.Fatalf("get = %+v, want %+v", got, a)
			}
		})
	}

	var c authorCache
	for i := range 3 * maxAuthorCache {
		c.put(fmt.Sprint("miss ", i), nil, t0.Add(time.Duration(i)*time.Millisecond))
		c.put(fmt.Sprint("hit ", i), a, t0)
	}
	if len(c.miss) > maxAuthorCache || len(c.m) > maxAuthorCache {
		t.Fatalf("cache grew to %d misses and %d authors, bound %d", len(c.miss), len(c.m), maxAuthorCache)
	}
	if _, known := c.get(fmt.Sprint("miss ", 3*maxAuthorCache-1), t0.Add(3*maxAuthorCache*time.Millisecond)); !known {
		t.Fatal("the latest miss was dropped")
	}
}
