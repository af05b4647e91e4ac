package devnet

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator/round"
	aggregatorv1 "github.com/fedtune/fedtune/api/aggregator/v1"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// TestNetworkRemoteAggregator runs a 1-round job with two trainers whose
// aggregation runs in a standalone aggregator (its own gRPC server over
// TLS, its own store and key): the coordinator holds no aggregator key,
// the RoundCommitted is signed by the aggregator's key, and the committed
// digest is the SHA-256 of the model the coordinator's store serves. Then
// it checks that both sides refuse the wrong identities.
func TestNetworkRemoteAggregator(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n := prepare(t, ctx, Options{JobName: "remote-agg", Trainers: 2, Rounds: 1, LocalSteps: 3, MinTrainers: 2, PretrainSteps: 2,
		RemoteAggregator: true, EvalData: "datasets/testdata/shards/trainer-3.jsonl"})
	cc, err := coordinator.LoadServerConfig(filepath.Join(n.Dir, "coordinator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	aggID := n.ID("aggregator")
	if cc.AggregatorKey != "" || cc.Aggregator == nil || cc.Aggregator.ID != aggID || cc.Aggregator.Address != n.Aggregator {
		t.Fatalf("coordinator config: aggregator_key %q, aggregator %+v", cc.AggregatorKey, cc.Aggregator)
	}

	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 1 || st.Rounds[0].Status != string(ledger.StatusCommitted) || st.Model == "" {
		t.Fatalf("job ended %s (%s) with rounds %v", st.State, st.Detail, st.Rounds)
	}
	if got := len(st.Rounds[0].Updates); got != 2 {
		t.Errorf("round 1 has %d updates, want 2", got)
	}

	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	commits := 0
	for _, tx := range txsOf(t, ctx, lc) {
		rc, ok := tx.Body.(ledger.RoundCommitted)
		if !ok {
			continue
		}
		commits++
		if tx.Signer != aggID || rc.ModelDigest != st.Model {
			t.Errorf("RoundCommitted of %s signed by %s; want %s by the standalone aggregator %s", rc.ModelDigest, tx.Signer, st.Model, aggID)
		}
	}
	if commits != 1 {
		t.Errorf("%d RoundCommitted txs on the chain, want 1", commits)
	}
	r, err := lc.Round(ctx, n.JobName, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Aggregator != aggID || r.ModelDigest != st.Model {
		t.Errorf("ledger round: aggregator %s model %s; want %s and %s", r.Aggregator, r.ModelDigest, aggID, st.Model)
	}
	final := filepath.Join(t.TempDir(), "final.safetensors")
	if err := n.Fetch(ctx, st.Model, final); err != nil {
		t.Fatal(err)
	}
	if d, err := digest.File(final); err != nil || d != st.Model {
		t.Errorf("the stored model hashes to %s (%v), the ledger commits %s", d, err, st.Model)
	}

	t.Run("refused", func(t *testing.T) {
		// The coordinator's check: the configured ID, with role aggregator.
		v := coordinator.AggregatorVerifier(lc, aggID)
		if err := v(aggID); err != nil {
			t.Errorf("the configured aggregator is refused: %v", err)
		}
		if err := v(n.ID("admin")); err == nil {
			t.Error("a key other than the configured ID is accepted")
		}
		trainerID := n.ID("trainer-1")
		if err := coordinator.AggregatorVerifier(lc, trainerID)(trainerID); err == nil || !strings.Contains(err.Error(), "role trainer") {
			t.Errorf("a trainer key configured as aggregator: err %v, want a role refusal", err)
		}
		// A coordinator configured with another aggregator ID cannot reach
		// the aggregator at all.
		wrong, err := tlsid.DialOption(n.Keys["coordinator"], coordinator.AggregatorVerifier(lc, n.ID("admin")))
		if err != nil {
			t.Fatal(err)
		}
		ra, err := coordinator.DialAggregator(n.Aggregator, n.ID("admin"), wrong)
		if err != nil {
			t.Fatal(err)
		}
		defer ra.Close()
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		defer acancel()
		if _, err := ra.Aggregate(actx, round.Task{JobID: "x", Round: 1, Inputs: []round.Input{{Trainer: trainerID}}}, ""); err == nil {
			t.Error("aggregation through a refused aggregator identity succeeded")
		} else {
			t.Logf("refused as expected: %v", err)
		}
		// The aggregator admits only the coordinator's key.
		call := func(key string) (*aggregatorv1.IdentityResponse, error) {
			opt, err := tlsid.DialOption(n.Keys[key], tlsid.ExpectID(aggID))
			if err != nil {
				t.Fatal(err)
			}
			ra, err := coordinator.DialAggregator(n.Aggregator, aggID, opt)
			if err != nil {
				t.Fatal(err)
			}
			defer ra.Close()
			return aggregatorv1.NewAggregatorClient(ra.Conn()).Identity(actx, &aggregatorv1.IdentityRequest{})
		}
		if resp, err := call("coordinator"); err != nil || resp.AggregatorId != aggID {
			t.Errorf("the coordinator's Identity call: %v, %v", resp, err)
		}
		if _, err := call("trainer-1"); err == nil {
			t.Error("the aggregator answers a trainer's key")
		}
	})
}
