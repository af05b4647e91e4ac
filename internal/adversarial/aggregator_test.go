package adversarial

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	aggnode "github.com/fedtune/fedtune/aggregator/node"
	"github.com/fedtune/fedtune/aggregator/round"
	aggregatorv1 "github.com/fedtune/fedtune/api/aggregator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// TestAttackAggregatorSignsOnlyItsOwn plays a lying coordinator against a
// standalone aggregator on a real devnet. Round 1 is open on the ledger
// with two honest updates, both delivered to the artifact store; the
// coordinator (stopped, so that it cannot close the round meanwhile) is
// impersonated with its own key, the only key the aggregator admits. It
// asks the aggregator to
//   - reject an honest, delivered update ("never delivered"), which would
//     let it drop the update from the commit;
//   - fail the round, which can commit;
//   - aggregate over another base model, another reference global or an
//     invented server state than the ledger gives.
//
// Each is refused with its reason, and the chain does not move.
func TestAttackAggregatorSignsOnlyItsOwn(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx := testContext(t, 4*time.Minute)
	n := prepareNet(t, ctx, devnet.Options{JobName: "agg-own", Trainers: 2, Rounds: 1, LocalSteps: 3, MinTrainers: 2, RemoteAggregator: true})
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	// With the aggregator down, the coordinator cannot aggregate: the
	// round stays open once both updates are delivered.
	if err := nw.Agg.Stop(); err != nil {
		t.Logf("aggregator stopped: %v", err)
	}
	nw.Agg = nil
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	open := aggOwnDelivered(t, ctx, n)
	if err := nw.Coord.Stop(); err != nil {
		t.Logf("coordinator stopped: %v", err)
	}
	nw.Coord = nil

	// The aggregator comes back; the test speaks for the coordinator.
	cfg, err := aggnode.LoadConfig(filepath.Join(n.Dir, "aggregator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgg := context.WithCancel(ctx)
	srv, err := aggnode.NewServer(actx, *cfg, nil, nil)
	if err != nil {
		stopAgg()
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(actx) }()
	t.Cleanup(func() { stopAgg(); <-ran })
	opt, err := tlsid.DialOption(n.Keys["coordinator"], tlsid.ExpectID(n.ID("aggregator")))
	if err != nil {
		t.Fatal(err)
	}
	ra, err := coordinator.DialAggregator(srv.Addr(), n.ID("aggregator"), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	agg := aggregatorv1.NewAggregatorClient(ra.Conn())

	before := waitSettled(t, ctx, n)
	honest := open.Updates[0]
	submit := func(body ledger.TxBody) error {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		_, err = agg.SubmitTx(ctx, &aggregatorv1.SubmitTxRequest{Type: body.TxType(), Body: data})
		return err
	}
	task := round.Task{JobID: open.JobID, Round: open.Round, Base: open.BaseModel, Strategy: open.Strategy}
	for _, u := range open.Updates {
		task.Inputs = append(task.Inputs, round.Input{Trainer: u.Trainer, Digest: u.UpdateDigest, Dataset: u.DatasetDigest, Samples: u.Samples})
	}
	other := digestOf("another base model")
	job, err := lc.Job(ctx, open.JobID)
	if err != nil {
		t.Fatal(err)
	}
	ref := open.BaseModel // the reference global: a LoRA job's first round starts from its initial adapter
	if job.Recipe.InitialAdapter != "" {
		ref = job.Recipe.InitialAdapter
	}
	for _, tc := range []struct {
		name   string
		attack func() error
		want   string
	}{
		{"reject an honest delivered update", func() error {
			return submit(ledger.UpdateRejected{JobID: open.JobID, Round: open.Round, UpdateDigest: honest.UpdateDigest,
				Reason: "the update was submitted on the ledger but never delivered to the coordinator before the aggregation"})
		}, "this aggregator did not reject it"},
		{"fail a round that can commit", func() error {
			return submit(ledger.RoundFailed{JobID: open.JobID, Round: open.Round, Reason: "aggregation failed: out of memory"})
		}, "this aggregator's aggregation of the round did not fail"},
		{"aggregate over another base", func() error {
			a := task
			a.Base = other
			_, err := agg.Aggregate(ctx, a.Proto(other))
			return err
		}, "the request names base model " + `"` + other + `"; the round's base model on the ledger is ` + open.BaseModel},
		{"aggregate against another reference", func() error {
			_, err := agg.Aggregate(ctx, task.Proto(other))
			return err
		}, "the request names reference weights " + `"` + other + `"; the ledger gives ` + ref},
		{"aggregate from an invented server state", func() error {
			a := task
			a.State = other
			_, err := agg.Aggregate(ctx, a.Proto(ref))
			return err
		}, "the request names server state " + `"` + other + `"; the ledger gives ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.attack()
			st := status.Convert(err)
			if err == nil || (st.Code() != codes.FailedPrecondition && st.Code() != codes.InvalidArgument) || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("err %v, want a refusal containing %q", err, tc.want)
			}
			t.Logf("refused: %s", st.Message())
		})
	}
	requireUnchanged(t, ctx, n, before)
	r, err := lc.Round(ctx, open.JobID, open.Round)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != ledger.StatusOpen {
		t.Fatalf("round 1 is %s after the attacks, want still open", r.Status)
	}
	for _, u := range r.Updates {
		if u.Rejected {
			t.Fatalf("update %s was rejected: %s", u.UpdateDigest, u.RejectReason)
		}
	}
}

// aggOwnDelivered waits until round 1 of n's job is open on the ledger with
// an update of every trainer, each in the coordinator's artifact store, and
// returns the open.
func aggOwnDelivered(t *testing.T, ctx context.Context, n *devnet.Net) *ledger.Round {
	t.Helper()
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Fetched as the aggregator, which may download a job's updates.
	opt, err := tlsid.DialOption(n.Keys["aggregator"], tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	ac, err := artifact.Dial(n.Coordinator, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	for {
		r, err := c.Round(ctx, n.JobName, 1)
		if err == nil && r.Status != ledger.StatusOpen {
			t.Fatalf("round 1 is %s; the coordinator closed it with its aggregator down", r.Status)
		}
		if err == nil && len(r.Updates) == n.Opts.Trainers {
			delivered := 0
			for i, u := range r.Updates {
				if _, err := ac.Download(ctx, u.UpdateDigest, io.Discard); err == nil {
					delivered++
				} else if i == 0 {
					break
				}
			}
			if delivered == len(r.Updates) {
				return r
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("round 1 never held %d delivered updates: %v", n.Opts.Trainers, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// aggSetDeadline rewrites n's job file with a round deadline of d, so that
// a round waiting for a trainer that will never deliver ends in d.
func aggSetDeadline(t *testing.T, n *devnet.Net, d time.Duration) {
	t.Helper()
	data, err := os.ReadFile(n.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	doc["deadline"] = d.String()
	if data, err = yaml.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.JobFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
