package coordinator

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/safetext"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// MaxCancelReason is the longest reason CancelJob takes (bytes): the
// failed round records it after ledger.CancelledPrefix and who cancelled.
const MaxCancelReason = 1024

// CancelJob stops the running or waiting job (see the RPC's doc in
// api/coordinator/v1): a Cancel of the job's machine, whose JobCancelled
// it waits for (until ctx ends). Over TLS only the key that launched the
// job (recorded in Dir, so also after a restart), the coordinator's own
// key or an active admin member may cancel.
func (s *Service) CancelJob(ctx context.Context, req *coordinatorv1.CancelJobRequest) (*coordinatorv1.CancelJobResponse, error) {
	if req.JobId == "" {
		return nil, status.Error(codes.InvalidArgument, "cancel: job_id is required")
	}
	reason := req.Reason
	if reason == "" {
		reason = "no reason given"
	}
	if len(reason) > MaxCancelReason {
		return nil, status.Errorf(codes.InvalidArgument, "cancel: reason is %d bytes, limit %d", len(reason), MaxCancelReason)
	}
	if err := safetext.Check(reason); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "cancel: reason: %v", err)
	}
	peer, _ := tlsid.PeerID(ctx) // "" over plain text (--insecure)
	if err := s.lock(ctx); err != nil {
		return nil, unavailable(err)
	}
	j := s.job
	if err := s.cancellable(ctx, j, req.JobId); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	by, err := s.mayCancel(ctx, j, peer)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if by != "" {
		reason = fmt.Sprintf("%s (cancelled by %s)", reason, by)
	}
	rd, err := j.m.Step(Cancel{Reason: reason})
	if err != nil {
		s.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "cancel: job %s: %v", req.JobId, err)
	}
	ended := make(chan struct{})
	j.ended = ended
	j.detail = "cancelling: " + reason
	s.log.InfoContext(ctx, "cancelling job", "job", req.JobId, "round", j.m.Round(), "by", by, "reason", reason)
	s.carry(j, rd)
	s.mu.Unlock()

	select {
	case <-ended:
	case <-ctx.Done():
		return nil, status.Errorf(codes.DeadlineExceeded, "cancel: job %s: JobCancelled submitted, not yet confirmed by the ledger (%v); follow it with fedtune round status %s", req.JobId, ctx.Err(), req.JobId)
	}
	s.mu.Lock()
	res, height := j.result, j.height
	s.mu.Unlock()
	switch {
	case res == nil:
		return nil, status.Errorf(codes.Internal, "cancel: job %s ended without a result", req.JobId)
	case !res.Cancelled:
		return nil, status.Errorf(codes.Aborted, "cancel: job %s: %s", req.JobId, res.Err)
	}
	return &coordinatorv1.CancelJobResponse{JobId: req.JobId, Round: res.CancelledRound, Height: height}, nil
}

// cancellable refuses a cancel of a job that is not j, the running job,
// or that has ended (s.mu held).
func (s *Service) cancellable(ctx context.Context, j *runningJob, id string) error {
	if j == nil || j.job.Name != id {
		running := "runs no job"
		if j != nil {
			running = "runs job " + j.job.Name
		}
		if rec, err := s.cfg.Ledger.Job(ctx, id); err == nil && rec.Cancelled != nil {
			return status.Errorf(codes.FailedPrecondition, "cancel: job %s was already cancelled at height %d: %s", id, rec.Cancelled.Height, rec.Cancelled.Reason)
		} else if err != nil && !errors.Is(err, ledger.ErrRecordNotFound) {
			s.log.WarnContext(ctx, "cannot read the job to cancel from the ledger", "job", id, "err", err)
		}
		return status.Errorf(codes.NotFound, "cancel: job %s is not running on this coordinator (it %s); fedtune round status shows what it runs", id, running)
	}
	if j.m.Cancelling() {
		return status.Errorf(codes.FailedPrecondition, "cancel: job %s is already being cancelled (%s)", id, j.detail)
	}
	if j.result != nil || j.m.Done() {
		what := "it finished"
		if j.result != nil && j.result.Err != "" {
			what = "it stopped: " + j.result.Err
		} else if j.result != nil {
			what = fmt.Sprintf("it finished: %d rounds committed, %d failed", j.result.Committed, j.result.Failed)
		}
		return status.Errorf(codes.FailedPrecondition, "cancel: job %s has ended (%s); there is nothing to cancel", id, what)
	}
	return nil
}

// mayCancel admits a CancelJob caller (s.mu held) and names it for the
// record: over TLS the key that launched j, the coordinator's own key or
// an active admin member; over plain text (--insecure), anyone ("").
func (s *Service) mayCancel(ctx context.Context, j *runningJob, peer string) (string, error) {
	switch {
	case peer == "":
		return "", nil
	case peer == s.id:
		return "the coordinator's key", nil
	case peer == j.launcher:
		return "its launcher " + abbrev(peer), nil
	}
	m, err := s.cfg.Ledger.Member(ctx, peer)
	if err != nil && !errors.Is(err, ledger.ErrRecordNotFound) {
		return "", status.Errorf(codes.Unavailable, "cancel: reading member %s from the ledger: %v", abbrev(peer), err)
	}
	if err == nil && m.Active && m.Role == ledger.RoleAdmin {
		return "admin " + abbrev(peer), nil
	}
	launcher := "was launched without TLS"
	if j.launcher != "" {
		launcher = "was launched by " + abbrev(j.launcher)
	}
	return "", status.Errorf(codes.PermissionDenied, "cancel: %s may not cancel job %s: it %s; only its launcher, the coordinator's key or an active admin member may cancel it",
		abbrev(peer), j.job.Name, launcher)
}

// tellEnded tells the trainers of e that its round ended (s.mu held).
func (s *Service) tellEnded(j *runningJob, e *RoundEnd) {
	for _, t := range e.Trainers {
		task := &coordinatorv1.Task{Ended: &coordinatorv1.RoundEnded{JobId: j.job.Name, Round: e.Round, Reason: e.Reason}}
		if found, sent := s.sessions.sendTask(t, task); sent {
			s.log.Info("round end sent", "job", j.job.Name, "round", e.Round, "trainer", abbrev(t))
		} else if found {
			s.log.Warn("task queue full; round end dropped", "trainer", abbrev(t))
		}
	}
}
