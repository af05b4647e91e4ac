package coordinator

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

// taskStream is a Tasks stream in memory: what the service sends arrives
// on tasks.
type taskStream struct {
	grpc.ServerStream
	ctx   context.Context
	tasks chan *coordinatorv1.Task
}

func (s *taskStream) Context() context.Context { return s.ctx }

func (s *taskStream) Send(t *coordinatorv1.Task) error {
	select {
	case s.tasks <- t:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// join registers a dataset for trainer key on the ledger, joins with it
// and opens its task stream; it returns the session and the stream.
func (n *testNet) join(t *testing.T, ctx context.Context, key ed25519.PrivateKey, name string) (string, string, *taskStream) {
	t.Helper()
	ds := ledger.DatasetRegistered{Digest: digest.Bytes([]byte("dataset " + name)), Name: name, Licence: "CC0-1.0", Source: "test",
		Samples: 100, Root: digest.Bytes([]byte("root " + name)), Bytes: 1000}
	if _, err := n.ledger.tw.Submit(key, ds); err != nil {
		t.Fatalf("%s: DatasetRegistered: %v", name, err)
	}
	c, err := n.s.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jr, err := n.s.Join(ctx, &coordinatorv1.JoinRequest{PublicKey: key.Public().(ed25519.PublicKey), Challenge: c.Challenge,
		Signature: SignChallenge(key, c.Challenge), Datasets: []string{ds.Digest}})
	if err != nil {
		t.Fatalf("%s: join: %v", name, err)
	}
	st := &taskStream{ctx: ctx, tasks: make(chan *coordinatorv1.Task, 4)}
	go n.s.Tasks(&coordinatorv1.TasksRequest{Session: jr.Session}, st)
	return jr.Session, ds.Digest, st
}

// One round end to end with no socket and no sleep: two trainers join, a
// job launches, the round opens on the twin ledger, each trainer records
// its UpdateSubmitted and tells the coordinator the height it committed
// at, the aggregation's commit lands, and the job is done.
func TestServiceRound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := newTestNet(t, t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan *coordinatorv1.StatusResponse, 256)
	n.s.onPublish = func(st *coordinatorv1.StatusResponse) {
		select {
		case published <- st:
		default:
		}
	}
	newModel := ""
	n.s.agg.(*testAggregator).aggregate = func(a AggregationTask, global string) (AggregationDone, error) {
		d, _, err := n.store.Put(ctx, strings.NewReader(fmt.Sprintf("round %d model over %s", a.Round, global)))
		if err != nil {
			return AggregationDone{}, err
		}
		newModel = d
		w := map[string]float64{}
		for _, in := range a.Inputs {
			w[in.Trainer] = 1 / float64(len(a.Inputs))
		}
		return AggregationDone{Round: a.Round, Model: d, Weights: w}, nil
	}
	runDone := make(chan error, 1)
	go func() { runDone <- n.s.Run(ctx) }()

	baseDir, _, _, _ := evalFixture(t)
	type trainer struct {
		key     ed25519.PrivateKey
		session string
		dataset string
		stream  *taskStream
	}
	var trainers []*trainer
	for i, k := range n.trainers {
		tr := &trainer{key: k}
		tr.session, tr.dataset, tr.stream = n.join(t, ctx, k, fmt.Sprintf("trainer-%d", i))
		trainers = append(trainers, tr)
	}
	job := fmt.Sprintf("name: twin-round\nseed: 3\nmodel:\n  path: %s\nrounds: 1\ntrainers:\n  min: 2\n  max: 2\n  fraction: 1\n"+
		"train:\n  local_steps: 1\n  batch: 1\n  seq_len: 8\nfinetune:\n  mode: full\nstrategy:\n  name: fedavg\ndeadline: 15m\n", baseDir)
	if _, err := n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: []byte(job)}); err != nil {
		t.Fatalf("launch: %v", err)
	}
	for _, tr := range trainers {
		var task *coordinatorv1.Task
		select {
		case task = <-tr.stream.tasks:
		case <-ctx.Done():
			t.Fatal("no task")
		}
		update, _, err := n.store.Put(ctx, strings.NewReader("update of "+ledger.KeyID(tr.key.Public().(ed25519.PublicKey))))
		if err != nil {
			t.Fatal(err)
		}
		h, err := n.ledger.tw.Submit(tr.key, ledger.UpdateSubmitted{JobID: task.JobId, Round: task.Round, UpdateDigest: update,
			DatasetDigest: tr.dataset, Samples: 1, Metrics: map[string]float64{"loss": 1}})
		if err != nil {
			t.Fatalf("UpdateSubmitted: %v", err)
		}
		// A height the ledger has not reached is refused at once, not polled for.
		if _, err := n.s.SubmitUpdate(ctx, &coordinatorv1.SubmitUpdateRequest{Session: tr.session, JobId: task.JobId, Round: task.Round,
			UpdateDigest: update, CommittedHeight: h + 100}); err == nil || !strings.Contains(err.Error(), "min height") {
			t.Fatalf("SubmitUpdate beyond the ledger's height: %v; want a refusal naming the min height", err)
		}
		if _, err := n.s.SubmitUpdate(ctx, &coordinatorv1.SubmitUpdateRequest{Session: tr.session, JobId: task.JobId, Round: task.Round,
			UpdateDigest: update, CommittedHeight: h}); err != nil {
			t.Fatalf("SubmitUpdate: %v", err)
		}
	}
	for done := false; !done; {
		select {
		case st := <-published:
			if st.State == JobFailed {
				t.Fatalf("job failed: %s", st.Detail)
			}
			done = st.State == JobDone
		case <-ctx.Done():
			t.Fatal("the job did not finish")
		}
	}
	st, err := n.s.Status(ctx, &coordinatorv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != JobDone || len(st.Rounds) != 1 || st.Rounds[0].Status != string(ledger.StatusCommitted) || st.Model != newModel || len(st.Rounds[0].Updates) != 2 {
		t.Fatalf("status %+v; want one committed round with two updates and model %s", st, newModel)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
}
