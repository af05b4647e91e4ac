package adversarial

import (
	"context"
	"testing"
	"time"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger/node"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestAttackQueryMinHeight: a caller that asks a ledger node to wait for a
// height far ahead (to hold its goroutines) is answered Unavailable at once;
// one just ahead waits no longer than the caller's own deadline; neither
// moves the chain. A min height already reached answers as a plain query.
func TestAttackQueryMinHeight(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 2*time.Minute)
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := waitSettled(t, ctx, nw.Net)
	head := nodeStatus(t, ctx, nw.Net, 0).Height
	nonce := ledgerv1.QueryKind_QUERY_KIND_NONCE
	admin := nw.ID("admin")

	if _, err := c.QueryAt(ctx, nonce, admin, 0, head); err != nil {
		t.Fatalf("min height = head (%d): %v", head, err)
	}

	start := time.Now()
	_, err = c.QueryAt(ctx, nonce, admin, 0, head+node.MaxQueryLead+1)
	if status.Code(err) != codes.Unavailable || time.Since(start) > 2*time.Second {
		t.Fatalf("min height beyond MaxQueryLead: %v after %v, want Unavailable at once", err, time.Since(start))
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.QueryAt(short, nonce, admin, 0, head+1000)
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("min height 1000 ahead with a 300ms deadline: %v after %v, want an error at the deadline", err, time.Since(start))
	}
	if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Unavailable {
		t.Fatalf("min height ahead: code %v (%v), want DeadlineExceeded or Unavailable", code, err)
	}
	requireUnchanged(t, ctx, nw.Net, before)
}
