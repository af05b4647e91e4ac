// Package fedtest holds helpers shared by fedtune's tests: race detection,
// and (as they are needed) test clusters and fault-injection helpers.
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
