//go:build !race

package fedtest

// RaceEnabled reports whether the binary was built with -race.
const RaceEnabled = false
