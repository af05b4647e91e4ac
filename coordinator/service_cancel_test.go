package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// asPeer returns ctx as a call over tlsid TLS from key would carry it.
func asPeer(t *testing.T, ctx context.Context, key ed25519.PrivateKey) context.Context {
	t.Helper()
	c, err := tlsid.Certificate(key)
	if err != nil {
		t.Fatal(err)
	}
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{x}}}})
}

// member adds a member with role to the net's ledger and returns its key.
func (n *testNet) member(t *testing.T, name string, role ledger.Role) ed25519.PrivateKey {
	t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ledger.tw.Submit(n.admin, ledger.MemberAdded{PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey)), Role: role, Name: name}); err != nil {
		t.Fatal(err)
	}
	return k
}

// waitState waits for a published status in state.
func waitState(t *testing.T, ctx context.Context, published <-chan *coordinatorv1.StatusResponse, state string) *coordinatorv1.StatusResponse {
	t.Helper()
	for {
		select {
		case st := <-published:
			if st.State == state && (state != JobWaiting || st.Detail != "") {
				return st
			}
		case <-ctx.Done():
			t.Fatalf("no status %s", state)
			return nil
		}
	}
}

// A job waiting for more trainers than exist is cancelled by its
// launcher, after a stranger, a trainer and another launcher were refused
// with nothing changed; the coordinator then takes the next launch, which
// commits. A cancelled job's name does not launch again.
func TestServiceCancelWaiting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := newTestNet(t, t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	launcher := n.member(t, "launcher", ledger.RoleCoordinator)
	other := n.member(t, "other-launcher", ledger.RoleCoordinator)
	stranger, err := ledger.GenerateKey()
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
	big := strings.NewReplacer("name: twin-round", "name: twin-big", "min: 2\n  max: 2", "min: 3\n  max: 3").Replace(string(testJob(baseDir)))
	if _, err := n.s.LaunchJob(asPeer(t, ctx, launcher), &coordinatorv1.LaunchJobRequest{JobYaml: []byte(big)}); err != nil {
		t.Fatalf("launch: %v", err)
	}
	waitState(t, ctx, published, JobWaiting)

	req := &coordinatorv1.CancelJobRequest{JobId: "twin-big", Reason: "needs 3 trainers; the network has 2"}
	for _, tc := range []struct {
		name string
		key  ed25519.PrivateKey
	}{{"stranger", stranger}, {"trainer", n.trainers[0]}, {"another launcher", other}} {
		_, err := n.s.CancelJob(asPeer(t, ctx, tc.key), req)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "may not cancel job twin-big") ||
			!strings.Contains(err.Error(), "was launched by "+abbrev(ledger.KeyID(launcher.Public().(ed25519.PublicKey)))) {
			t.Errorf("cancel by %s: %v; want PermissionDenied naming the job and its launcher", tc.name, err)
		}
	}
	if rec, err := n.ledger.Job(ctx, "twin-big"); err != nil || rec.Cancelled != nil {
		t.Fatalf("job record after the refused cancels: %+v, %v; want it registered, not cancelled", rec, err)
	}
	if st, err := n.s.Status(ctx, &coordinatorv1.StatusRequest{}); err != nil || st.State != JobWaiting {
		t.Fatalf("status after the refused cancels: %+v, %v; want waiting", st, err)
	}
	_, err = n.s.CancelJob(asPeer(t, ctx, launcher), &coordinatorv1.CancelJobRequest{JobId: "no-such-job"})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "job no-such-job is not running on this coordinator (it runs job twin-big)") {
		t.Fatalf("cancel of an unknown job: %v", err)
	}

	resp, err := n.s.CancelJob(asPeer(t, ctx, launcher), req)
	if err != nil {
		t.Fatalf("cancel by the launcher: %v", err)
	}
	rec, err := n.ledger.Job(ctx, "twin-big")
	if err != nil || rec.Cancelled == nil || rec.Cancelled.Height != resp.Height || resp.Round != 0 ||
		!strings.Contains(rec.Cancelled.Reason, req.Reason) || !strings.Contains(rec.Cancelled.Reason, "cancelled by its launcher") {
		t.Fatalf("cancel %+v; job record %+v, %v", resp, rec, err)
	}
	if st, err := n.s.Status(ctx, &coordinatorv1.StatusRequest{}); err != nil || st.State != JobCancelled || !strings.Contains(st.Detail, req.Reason) {
		t.Fatalf("status after the cancel: %+v, %v", st, err)
	}
	var cancelled dto.Metric
	if err := n.s.cfg.Metrics.Cancelled.Write(&cancelled); err != nil || cancelled.GetCounter().GetValue() != 1 {
		t.Errorf("fedtune_coordinator_jobs_cancelled_total %v (%v), want 1", cancelled.GetCounter().GetValue(), err)
	}
	if _, err := n.s.CancelJob(asPeer(t, ctx, launcher), req); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "has ended") {
		t.Fatalf("second cancel: %v; want FailedPrecondition saying the job has ended", err)
	}
	if _, err := n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: []byte(big)}); status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "was cancelled at height") {
		t.Fatalf("relaunch of the cancelled job: %v", err)
	}

	if _, err := n.s.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: testJob(baseDir)}); err != nil {
		t.Fatalf("launch after the cancel: %v", err)
	}
	for _, tr := range trainers {
		task := tr.task(t, ctx)
		update, h := n.update(t, ctx, tr, task)
		if _, err := n.s.SubmitUpdate(ctx, &coordinatorv1.SubmitUpdateRequest{Session: tr.session, JobId: task.JobId, Round: task.Round,
			UpdateDigest: update, CommittedHeight: h}); err != nil {
			t.Fatalf("SubmitUpdate: %v", err)
		}
	}
	waitDone(t, ctx, published)
	if r, err := n.ledger.Round(ctx, "twin-round", 1, 0); err != nil || r.Status != ledger.StatusCommitted || r.ModelDigest != *model {
		t.Fatalf("the next job's round: %+v, %v; want committed", r, err)
	}
	if st, err := n.s.Status(ctx, &coordinatorv1.StatusRequest{JobId: "twin-big"}); err != nil || st.State != JobCancelled || !strings.Contains(st.Detail, req.Reason) {
		t.Fatalf("status of the cancelled job once another runs: %+v, %v; want cancelled with the reason", st, err)
	}
	if _, err := n.s.CancelJob(ctx, &coordinatorv1.CancelJobRequest{JobId: "twin-round"}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "it finished") {
		t.Fatalf("cancel of a finished job: %v", err)
	}
}

// An admin cancels a job launched over plain text while its round is
// open: the round fails on the ledger with the reason, both selected
// trainers are told the round ended, and a late update is refused. A
// coordinator member that did not launch it is refused.
func TestServiceCancelOpenRound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := newTestNet(t, t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	other := n.member(t, "other-launcher", ledger.RoleCoordinator)
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
	first := trainers[0].task(t, ctx)
	late := trainers[1].task(t, ctx)
	update, h := n.update(t, ctx, trainers[0], first)
	if _, err := n.s.SubmitUpdate(ctx, &coordinatorv1.SubmitUpdateRequest{Session: trainers[0].session, JobId: first.JobId, Round: first.Round,
		UpdateDigest: update, CommittedHeight: h}); err != nil {
		t.Fatalf("SubmitUpdate: %v", err)
	}
	req := &coordinatorv1.CancelJobRequest{JobId: "twin-round", Reason: "wrong base model"}
	if _, err := n.s.CancelJob(asPeer(t, ctx, other), req); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "launched without TLS") {
		t.Fatalf("cancel by a coordinator member that did not launch it: %v", err)
	}
	resp, err := n.s.CancelJob(asPeer(t, ctx, n.admin), req)
	if err != nil {
		t.Fatalf("cancel by the admin: %v", err)
	}
	if resp.Round != 1 {
		t.Fatalf("cancel %+v; want round 1 failed", resp)
	}
	r, err := n.ledger.Round(ctx, "twin-round", 1, 0)
	if err != nil || r.Status != ledger.StatusFailed || !strings.HasPrefix(r.FailReason, ledger.CancelledPrefix+req.Reason+" (cancelled by admin ") || r.ClosedHeight != resp.Height {
		t.Fatalf("round 1 after the cancel: %+v, %v", r, err)
	}
	for i, tr := range trainers {
		e := tr.task(t, ctx).GetEnded()
		if e == nil || e.JobId != "twin-round" || e.Round != 1 || !strings.Contains(e.Reason, req.Reason) {
			t.Fatalf("trainer %d: round end %+v; want round 1's with the reason", i, e)
		}
	}
	_, err = n.ledger.tw.Submit(n.trainers[1], ledger.UpdateSubmitted{JobID: late.JobId, Round: late.Round, UpdateDigest: strings.Repeat("9", 64),
		DatasetDigest: trainers[1].dataset, Samples: 1})
	if !errors.Is(err, ledger.ErrRoundNotOpen) {
		t.Fatalf("late update: %v; want the round refused as not open", err)
	}
}

// The launcher may still cancel its job after the coordinator restarted
// (the launcher is recorded with the job), and a coordinator restarted
// after the cancel does not resume the job, even one that did not mark it
// done.
func TestServiceCancelAfterRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	n, err := newTestNet(t, dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	launcher := n.member(t, "launcher", ledger.RoleCoordinator)
	stop := run(t, ctx, n.s)
	baseDir, _, _, _ := evalFixture(t)
	if _, err := n.s.LaunchJob(asPeer(t, ctx, launcher), &coordinatorv1.LaunchJobRequest{JobYaml: testJob(baseDir)}); err != nil {
		t.Fatalf("launch: %v", err)
	}
	stop()

	s2, err := n.newService(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	published := watch(s2)
	stop2 := run(t, ctx, s2)
	waitState(t, ctx, published, JobWaiting)
	resp, err := s2.CancelJob(asPeer(t, ctx, launcher), &coordinatorv1.CancelJobRequest{JobId: "twin-round", Reason: "restarted"})
	if err != nil || resp.Round != 0 {
		t.Fatalf("cancel by the launcher after a restart: %+v, %v", resp, err)
	}
	stop2()
	// As if the coordinator stopped before it marked the job done: the
	// ledger's record still keeps it from resuming.
	if err := os.Remove(filepath.Join(dir, doneMarker)); err != nil {
		t.Fatal(err)
	}

	s3, err := n.newService(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer run(t, ctx, s3)()
	if _, err := s3.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: []byte(strings.Replace(string(testJob(baseDir)), "name: twin-round", "name: twin-next", 1))}); err != nil {
		t.Fatalf("launch on a coordinator restarted after the cancel: %v", err)
	}
}
