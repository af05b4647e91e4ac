package adversarial

import (
	"testing"
	"time"
)

// TestHarnessLedgersAgree checks the harness itself: three nodes start, agree
// on one chain, and an idle chain does not move.
func TestHarnessLedgersAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 2*time.Minute)
	nw := startLedgers(t, ctx)
	before := waitSettled(t, ctx, nw.Net)
	requireUnchanged(t, ctx, nw.Net, before)
}
