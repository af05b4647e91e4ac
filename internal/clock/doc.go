// Package clock is the time source a long-running role reads instead of
// the time package, so its tests can move time by hand: Real is the wall
// clock, Fake a clock that moves only when told (Advance, Set) and fires
// the timers and tickers it passes. It imports nothing of fedtune's.
//
//	c := clock.NewFake(t0)
//	tick := c.NewTicker(time.Second)
//	c.Advance(time.Second) // tick.C() now has t0+1s
package clock
