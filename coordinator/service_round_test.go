package coordinator

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator/round"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
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

// testTrainer is a trainer of a testNet: its key, dataset and session.
type testTrainer struct {
	key     ed25519.PrivateKey
	dataset string
	session string
	stream  *taskStream
}

// trainer registers a dataset for the net's i-th trainer key.
func (n *testNet) trainer(t *testing.T, i int) *testTrainer {
	t.Helper()
	name := fmt.Sprintf("trainer-%d", i)
	ds := ledger.DatasetRegistered{Digest: digest.Bytes([]byte("dataset " + name)), Name: name, Licence: "CC0-1.0", Source: "test",
		Samples: 100, Root: digest.Bytes([]byte("root " + name)), Bytes: 1000}
	if _, err := n.ledger.tw.Submit(n.trainers[i], ds); err != nil {
		t.Fatalf("%s: DatasetRegistered: %v", name, err)
	}
	return &testTrainer{key: n.trainers[i], dataset: ds.Digest}
}

// join joins tr to s and opens its task stream (until ctx ends).
func (tr *testTrainer) join(t *testing.T, ctx context.Context, s *Service) {
	t.Helper()
	c, err := s.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jr, err := s.Join(ctx, &coordinatorv1.JoinRequest{PublicKey: tr.key.Public().(ed25519.PublicKey), Challenge: c.Challenge,
		Signature: client.SignChallenge(tr.key, c.Challenge), Datasets: []string{tr.dataset}})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	tr.session = jr.Session
	tr.stream = &taskStream{ctx: ctx, tasks: make(chan *coordinatorv1.Task, 4)}
	go s.Tasks(&coordinatorv1.TasksRequest{Session: jr.Session}, tr.stream)
}

// task waits for tr's next task.
func (tr *testTrainer) task(t *testing.T, ctx context.Context) *coordinatorv1.Task {
	t.Helper()
	select {
	case task := <-tr.stream.tasks:
		return task
	case <-ctx.Done():
		t.Fatal("no task")
		return nil
	}
}

// update stores an update for task, records its UpdateSubmitted on the
// ledger and returns its digest and the height it committed at.
func (n *testNet) update(t *testing.T, ctx context.Context, tr *testTrainer, task *coordinatorv1.Task) (string, uint64) {
	t.Helper()
	update, _, err := n.store.Put(ctx, strings.NewReader(fmt.Sprintf("update of %s in round %d", tr.key.Public(), task.Round)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := n.ledger.tw.Submit(tr.key, ledger.UpdateSubmitted{JobID: task.JobId, Round: task.Round, UpdateDigest: update,
		DatasetDigest: tr.dataset, Samples: 1, Metrics: map[string]float64{"loss": 1}})
	if err != nil {
		t.Fatalf("UpdateSubmitted: %v", err)
	}
	return update, h
}

// watch returns the live views s publishes from now on (s not running).
func watch(s *Service) <-chan *coordinatorv1.StatusResponse {
	published := make(chan *coordinatorv1.StatusResponse, 1024)
	s.onPublish = func(st *coordinatorv1.StatusResponse) {
		select {
		case published <- st:
		default:
		}
	}
	return published
}

// waitDone waits for a published JobDone, failing on JobFailed.
func waitDone(t *testing.T, ctx context.Context, published <-chan *coordinatorv1.StatusResponse) {
	t.Helper()
	for {
		select {
		case st := <-published:
			switch st.State {
			case JobFailed:
				t.Fatalf("job failed: %s", st.Detail)
			case JobDone:
				return
			}
		case <-ctx.Done():
			t.Fatal("the job did not finish")
		}
	}
}

// averaging makes the net's aggregator store a new model per round and
// weigh its inputs equally (as FedAvg does for equal samples); it returns
// where the last model's digest is kept.
func (n *testNet) averaging(ctx context.Context, s *Service) *string {
	model := new(string)
	s.agg.(*testAggregator).aggregate = func(a round.Task, global string) (round.Result, error) {
		d, _, err := n.store.Put(ctx, strings.NewReader(fmt.Sprintf("round %d model over %s", a.Round, global)))
		if err != nil {
			return round.Result{}, err
		}
		*model = d
		w := map[string]float64{}
		for _, in := range a.Inputs {
			w[in.Trainer] = 1 / float64(len(a.Inputs))
		}
		return round.Result{Round: a.Round, Model: d, Weights: w}, nil
	}
	return model
}

// run runs s until the returned stop is called.
func run(t *testing.T, ctx context.Context, s *Service) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// testJob is a one-round full fine-tuning job of two trainers on the
// model in baseDir.
func testJob(baseDir string) []byte {
	return []byte(fmt.Sprintf("name: twin-round\nseed: 3\nmodel:\n  path: %s\nrounds: 1\ntrainers:\n  min: 2\n  max: 2\n  fraction: 1\n"+
		"train:\n  local_steps: 1\n  batch: 1\n  seq_len: 8\nfinetune:\n  mode: full\nstrategy:\n  name: fedavg\ndeadline: 15m\n", baseDir))
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
	published := watch(n.s)
	model := n.averaging(ctx, n.s)
	defer run(t, ctx, n.s)()

	baseDir, _, _, _ := evalFixture(t)
	trainers := []*testTrainer{n.trainer(t, 0), n.trainer(t, 1)}
	for _, tr := range trainers {
		tr.join(t, ctx, n.s)
	}
	if _, err := n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: testJob(baseDir)}); err != nil {
		t.Fatalf("launch: %v", err)
	}
	for _, tr := range trainers {
		task := tr.task(t, ctx)
		update, h := n.update(t, ctx, tr, task)
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
	waitDone(t, ctx, published)
	st, err := n.s.Status(ctx, &coordinatorv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != JobDone || len(st.Rounds) != 1 || st.Rounds[0].Status != string(ledger.StatusCommitted) || st.Model != *model || len(st.Rounds[0].Updates) != 2 {
		t.Fatalf("status %+v; want one committed round with two updates and model %s", st, *model)
	}
}

// A coordinator stopped in the middle of a round resumes it from the
// ledger: a new service on the same Dir re-collects the update already on
// the ledger, sends the task again only to the trainer that owes one, and
// finishes the job.
func TestServiceResumesRound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	n, err := newTestNet(t, dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	n.averaging(ctx, n.s)
	stop := run(t, ctx, n.s)
	baseDir, _, _, _ := evalFixture(t)
	trainers := []*testTrainer{n.trainer(t, 0), n.trainer(t, 1)}
	sctx, endSessions := context.WithCancel(ctx)
	for _, tr := range trainers {
		tr.join(t, sctx, n.s)
	}
	if _, err := n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: testJob(baseDir)}); err != nil {
		t.Fatalf("launch: %v", err)
	}
	first := trainers[0].task(t, ctx)
	trainers[1].task(t, ctx) // never answered before the restart
	update, h := n.update(t, ctx, trainers[0], first)
	if _, err := n.s.SubmitUpdate(ctx, &coordinatorv1.SubmitUpdateRequest{Session: trainers[0].session, JobId: first.JobId, Round: first.Round,
		UpdateDigest: update, CommittedHeight: h}); err != nil {
		t.Fatalf("SubmitUpdate: %v", err)
	}
	endSessions()
	stop()

	s2, err := n.newService(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	published := watch(s2)
	model := n.averaging(ctx, s2)
	defer run(t, ctx, s2)()
	for _, tr := range trainers {
		tr.join(t, ctx, s2)
	}
	task := trainers[1].task(t, ctx)
	if task.JobId != first.JobId || task.Round != first.Round {
		t.Fatalf("task after the restart: job %s round %d, want %s round %d", task.JobId, task.Round, first.JobId, first.Round)
	}
	update, h = n.update(t, ctx, trainers[1], task)
	if _, err := s2.SubmitUpdate(ctx, &coordinatorv1.SubmitUpdateRequest{Session: trainers[1].session, JobId: task.JobId, Round: task.Round,
		UpdateDigest: update, CommittedHeight: h}); err != nil {
		t.Fatalf("SubmitUpdate after the restart: %v", err)
	}
	waitDone(t, ctx, published)
	select {
	case extra := <-trainers[0].stream.tasks:
		t.Fatalf("trainer 0, whose update the ledger holds, got a task again: %v", extra)
	default:
	}
	r, err := n.ledger.Round(ctx, first.JobId, 1, 0)
	if err != nil || r.Status != ledger.StatusCommitted || r.ModelDigest != *model || len(r.Contributors) != 2 {
		t.Fatalf("round 1 on the ledger: %+v, %v; want committed with two contributors and model %s", r, err, *model)
	}
}

// A round whose deadline passes with too few updates fails on the
// service's clock: the test moves the fake clock past the deadline, the
// driver's next tick tells the machine, and the aggregator's RoundFailed
// lands on the ledger at the clock's time.
func TestServiceRoundDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := newTestNet(t, t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	published := watch(n.s)
	n.averaging(ctx, n.s)
	defer run(t, ctx, n.s)()
	baseDir, _, _, _ := evalFixture(t)
	trainers := []*testTrainer{n.trainer(t, 0), n.trainer(t, 1)}
	for _, tr := range trainers {
		tr.join(t, ctx, n.s)
	}
	if _, err := n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: testJob(baseDir)}); err != nil {
		t.Fatalf("launch: %v", err)
	}
	task := trainers[0].task(t, ctx)
	trainers[1].task(t, ctx) // never answered
	update, h := n.update(t, ctx, trainers[0], task)
	if _, err := n.s.SubmitUpdate(ctx, &coordinatorv1.SubmitUpdateRequest{Session: trainers[0].session, JobId: task.JobId, Round: task.Round,
		UpdateDigest: update, CommittedHeight: h}); err != nil {
		t.Fatalf("SubmitUpdate: %v", err)
	}
	for { // the driver's tickers are made once Run has started
		added := n.clock.Added()
		if n.clock.Waiters() >= 2 {
			break
		}
		<-added
	}
	deadline := time.Unix(0, task.DeadlineUnixNano)
	n.clock.Set(deadline.Add(time.Second))
	for done := false; !done; {
		select {
		case st := <-published:
			done = st.State == JobDone || st.State == JobFailed
		case <-ctx.Done():
			t.Fatal("the round did not fail at its deadline")
		}
	}
	r, err := n.ledger.Round(ctx, task.JobId, 1, 0)
	if err != nil || r.Status != ledger.StatusFailed || !strings.Contains(r.FailReason, "deadline") {
		t.Fatalf("round 1 on the ledger: %+v, %v; want failed at its deadline", r, err)
	}
}

// A launch while a job waits for trainers is refused with the running
// job's name, what it waits for and how to follow it.
func TestServiceLaunchWhileWaiting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := newTestNet(t, t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	published := watch(n.s)
	defer run(t, ctx, n.s)()
	baseDir, _, _, _ := evalFixture(t)
	n.trainer(t, 0).join(t, ctx, n.s) // one of the two the job needs
	if _, err := n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: testJob(baseDir)}); err != nil {
		t.Fatalf("launch: %v", err)
	}
	for st := range published {
		if st.State == JobWaiting && st.Detail != "" {
			break
		}
	}
	second := strings.Replace(string(testJob(baseDir)), "name: twin-round", "name: twin-second", 1)
	_, err = n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: []byte(second)})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second launch: %v, want FailedPrecondition", err)
	}
	for _, want := range []string{"job twin-round is still running (", "need 2", "fedtune round status twin-round", "fedtune round cancel twin-round"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second launch: %v; want %q in it", err, want)
		}
	}
}
