package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/ledger/client"
)

// TestVerifyCommittedFollowerApplying plays, on a real three-node cluster,
// the interleaving behind a devnet launch that failed under load with
// "the node's chain (head 4) does not hold it": the client asks a follower
// for a tx the leader has just committed before the follower has applied
// its block (NotFound), the follower applies it, and the client's Status
// then sees the head at the tx's height. That is a follower a little
// behind, not a node claiming a commit its chain lacks: VerifyCommitted
// must ask again and accept the proof.
func TestVerifyCommittedFollowerApplying(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 3)
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	leader := c.leader(c.nodes...)
	f := c.nodes[0]
	if f == leader {
		f = c.nodes[1]
	}
	warm, _ := c.adminTx()
	head := c.submit(leader, warm)[0]
	c.waitHeight(head, c.nodes...)

	tx, _ := c.adminTx()
	want := head + 1
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	getTxs, committedAt := 0, uint64(0)
	// After the follower's first GetTx answer (NotFound: the tx is not
	// submitted yet), the tx commits through the leader and the follower
	// applies its block, before the client's next call.
	lag := grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if !strings.HasSuffix(method, "/GetTx") {
			return err
		}
		getTxs++
		if getTxs == 1 && status.Code(err) == codes.NotFound {
			committedAt = c.submit(leader, tx)[0]
			c.waitHeight(committedAt, f)
		}
		return err
	})
	cl, err := client.Dial(ctx, f.grpcAddr, c.admin, nil, lag)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	err = cl.VerifyCommitted(ctx, tx, want)
	if committedAt != want {
		t.Fatalf("the tx committed at height %d, want %d (the test's interleaving did not happen)", committedAt, want)
	}
	if err != nil {
		t.Fatalf("VerifyCommitted on a follower that applied the block between GetTx and Status: %v", err)
	}
	if getTxs < 2 {
		t.Fatalf("GetTx asked %d times, want a second time after the Status", getTxs)
	}
}
