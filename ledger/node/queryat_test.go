package node_test

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
)

// TestQueryMinHeight: a query with a min height answers as soon as the
// node has applied that height, and Unavailable or DeadlineExceeded when
// the call's deadline passes first.
func TestQueryMinHeight(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 1)
	nd := c.nodes[0]
	nd.start(nd.config(1, ""))
	c.leader(nd)
	tx, k := c.adminTx()
	h := c.submit(nd, tx)[0]
	id := ledger.KeyID(k.Public().(ed25519.PublicKey))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nd.client.QueryAt(ctx, ledgerv1.QueryKind_QUERY_KIND_MEMBER, id, 0, h); err != nil {
		t.Fatalf("QueryAt(min %d) of an applied height: %v", h, err)
	}

	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	_, err := nd.client.QueryAt(short, ledgerv1.QueryKind_QUERY_KIND_MEMBER, id, 0, h+1)
	if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Unavailable {
		t.Fatalf("QueryAt(min %d) beyond the head: %v; want DeadlineExceeded or Unavailable", h+1, err)
	}
	if _, err := nd.client.QueryAt(ctx, ledgerv1.QueryKind_QUERY_KIND_MEMBER, id, 0, h+1<<30); status.Code(err) != codes.Unavailable {
		t.Fatalf("QueryAt far ahead: %v; want Unavailable at once", err)
	}

	// A query waiting for the next height answers once it is applied.
	tx2, k2 := c.adminTx()
	id2 := ledger.KeyID(k2.Public().(ed25519.PublicKey))
	got := make(chan error, 1)
	go func() {
		_, err := nd.client.QueryAt(ctx, ledgerv1.QueryKind_QUERY_KIND_MEMBER, id2, 0, h+1)
		got <- err
	}()
	c.submit(nd, tx2)
	if err := <-got; err != nil {
		t.Fatalf("QueryAt(min %d) across the commit: %v", h+1, err)
	}
}
