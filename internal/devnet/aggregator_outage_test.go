package devnet

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/ledger"
)

// TestNetworkAggregatorOutage stops the standalone aggregator before a
// round can be aggregated: the aggregation cannot run, and a RoundFailed
// cannot be signed either (the aggregator signs one only for an
// aggregation of its own that failed); the coordinator retries with
// backoff and its status says what it waits for; once the aggregator is
// back, the round is aggregated and commits, and the job ends.
func TestNetworkAggregatorOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n := prepare(t, ctx, Options{JobName: "agg-outage", Trainers: 2, Rounds: 1, LocalSteps: 3, MinTrainers: 2, PretrainSteps: 2,
		RemoteAggregator: true, EvalData: "datasets/testdata/shards/trainer-3.jsonl",
		// The trainers train with the engine's hand-written step (the GPU
		// path's CPU reference), so a network runs it end to end too.
		Device: "host"})
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	if err := nw.Agg.Stop(); err != nil {
		t.Logf("aggregator stopped: %v", err)
	}
	nw.Agg = nil
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}

	conn, err := n.dial("admin")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := coordinatorv1.NewCoordinatorClient(conn)
	var detail string
	for detail == "" {
		st, err := c.Status(ctx, &coordinatorv1.StatusRequest{JobId: n.JobName})
		if err != nil {
			t.Fatal(err)
		}
		if st.State == coordinator.JobDone || st.State == coordinator.JobFailed {
			t.Fatalf("job ended (%s: %s) while its aggregator was down", st.State, st.Detail)
		}
		if strings.Contains(st.Detail, "aggregation not run since") {
			detail = st.Detail
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the status never said the round's aggregation is waiting; last detail %q", st.Detail)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("status while the aggregator is down: %s", detail)
	if !strings.Contains(detail, "round 1") || !strings.Contains(detail, "retrying every") {
		t.Errorf("status detail %q does not name the round and the retry", detail)
	}

	if nw.Agg, err = n.startAggregator(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rounds) != 1 {
		t.Fatalf("job ended %s (%s) with rounds %v", st.State, st.Detail, st.Rounds)
	}
	r := st.Rounds[0]
	if len(r.Updates) != 2 {
		t.Errorf("round 1 has %d updates from the host-device trainers, want 2", len(r.Updates))
	}
	if r.Status != string(ledger.StatusCommitted) {
		t.Errorf("round 1 ended %s (%q), want committed once the aggregator is back", r.Status, r.FailReason)
	}
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	lr, err := lc.Round(ctx, n.JobName, 1)
	if err != nil {
		t.Fatal(err)
	}
	if lr.Status != ledger.StatusCommitted || lr.Aggregator != n.ID("aggregator") {
		t.Errorf("the ledger holds round 1 as %s by %s, want committed by the aggregator", lr.Status, lr.Aggregator)
	}
}
