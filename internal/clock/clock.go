package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and makes timers and tickers.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives the time once d has passed.
	After(d time.Duration) <-chan time.Time
	// NewTicker returns a ticker that fires every d (d > 0).
	NewTicker(d time.Duration) Ticker
}

// Ticker fires on C every period until stopped.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock (the time package).
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) NewTicker(d time.Duration) Ticker       { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Fake is a clock that moves only when Advance or Set moves it. Timers
// and tickers fire, in time order, as it passes them; a ticker's channel
// holds one tick (later ones are dropped until it is read, as with
// time.Ticker). Safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*waiter
	changed chan struct{} // closed when a waiter is added
}

type waiter struct {
	at     time.Time
	period time.Duration // 0: a one-shot timer
	c      chan time.Time
	done   bool
}

// NewFake returns a fake clock at t.
func NewFake(t time.Time) *Fake { return &Fake{now: t, changed: make(chan struct{})} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After returns a channel that receives the fake time once it has moved
// by d (at once for d ≤ 0).
func (f *Fake) After(d time.Duration) <-chan time.Time {
	w := &waiter{c: make(chan time.Time, 1)}
	f.add(w, d)
	return w.c
}

// NewTicker returns a ticker that fires each time the fake clock passes
// another multiple of d from now.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker period")
	}
	w := &waiter{period: d, c: make(chan time.Time, 1)}
	f.add(w, d)
	return fakeTicker{f, w}
}

func (f *Fake) add(w *waiter, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.at = f.now.Add(d)
	if d <= 0 && w.period == 0 {
		w.c <- f.now
		w.done = true
		return
	}
	f.waiters = append(f.waiters, w)
	close(f.changed)
	f.changed = make(chan struct{})
}

// Waiters returns how many timers and tickers wait on the clock.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

// Added returns a channel closed when the next timer or ticker is made, so
// a test can wait until the code under test waits on the clock.
func (f *Fake) Added() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Advance moves the clock by d, firing what it passes.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the clock to t (never back), firing what it passes, in order.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		sort.SliceStable(f.waiters, func(i, j int) bool { return f.waiters[i].at.Before(f.waiters[j].at) })
		if len(f.waiters) == 0 || f.waiters[0].at.After(t) {
			break
		}
		w := f.waiters[0]
		if w.at.After(f.now) {
			f.now = w.at
		}
		select {
		case w.c <- f.now:
		default:
		}
		if w.period > 0 {
			w.at = w.at.Add(w.period)
			continue
		}
		w.done = true
		f.waiters = f.waiters[1:]
	}
	if t.After(f.now) {
		f.now = t
	}
}

func (f *Fake) remove(w *waiter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, o := range f.waiters {
		if o == w {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			return
		}
	}
}

type fakeTicker struct {
	f *Fake
	w *waiter
}

func (t fakeTicker) C() <-chan time.Time { return t.w.c }
func (t fakeTicker) Stop()               { t.f.remove(t.w) }
