package trainer

import (
	"math"
	"testing"
)

// TestClaimedSamples: a trainer claims the examples it trained on, at most
// its dataset's registered count and the recipe's bound.
func TestClaimedSamples(t *testing.T) {
	for _, tc := range []struct {
		name         string
		dataset      uint64
		steps, batch int
		recipeMax    uint64
		want         uint64
	}{
		{"steps x batch below the dataset", 1000, 10, 8, 0, 80},
		{"dataset below steps x batch", 50, 10, 8, 0, 50},
		{"recipe bound", 1000, 10, 8, 64, 64},
		{"recipe bound above the budget", 1000, 10, 8, 500, 80},
		{"all equal", 80, 10, 8, 80, 80},
		{"no steps", 1000, 0, 8, 0, 0},
		{"no batch", 1000, 10, 0, 0, 0},
		{"overflow saturates", math.MaxUint64, math.MaxInt, math.MaxInt, 0, math.MaxUint64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClaimedSamples(tc.dataset, tc.steps, tc.batch, tc.recipeMax); got != tc.want {
				t.Errorf("ClaimedSamples(%d, %d, %d, %d) = %d, want %d", tc.dataset, tc.steps, tc.batch, tc.recipeMax, got, tc.want)
			}
		})
	}
}
