// Package fedtest holds helpers shared by fedtune's tests: whether the race
// detector is on (RaceEnabled, SkipUnderRace) and CrashFS, an in-memory
// file system for pebble that a test may crash-clone while a store writes
// to it, to check that every acknowledged write survives a crash.
//
// Tests too slow to run under the race detector are named TestNoRace... and
// call SkipUnderRace; "make test" runs them in a second pass without -race.
package fedtest

import "testing"

// SkipUnderRace skips t when the race detector is on. Use it only in tests
// named TestNoRace..., which "make test" runs again without -race.
func SkipUnderRace(t testing.TB) {
	t.Helper()
	if RaceEnabled {
		t.Skip("too slow under -race; run by the non-race pass of make test")
	}
}
