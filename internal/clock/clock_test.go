package clock

import (
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFake(t0)
	after := c.After(3 * time.Second)
	tick := c.NewTicker(time.Second)
	if c.Waiters() != 2 {
		t.Fatalf("%d waiters, want 2", c.Waiters())
	}
	c.Advance(time.Second)
	if got := <-tick.C(); !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("tick at %v", got)
	}
	select {
	case <-after:
		t.Fatal("After fired early")
	default:
	}
	c.Advance(5 * time.Second)
	if got := <-after; !got.Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("After fired at %v, want t0+3s", got)
	}
	<-tick.C() // one tick held; the rest dropped
	select {
	case <-tick.C():
		t.Fatal("a ticker held more than one tick")
	default:
	}
	tick.Stop()
	if c.Waiters() != 0 || !c.Now().Equal(t0.Add(6*time.Second)) {
		t.Fatalf("waiters %d, now %v", c.Waiters(), c.Now())
	}
	select {
	case <-c.After(0):
	default:
		t.Fatal("After(0) did not fire at once")
	}
}
