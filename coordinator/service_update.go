package coordinator

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// The calls that change the job: a trainer's SubmitUpdate (read back from
// the ledger at the height the trainer gives, and fed to the machine) and
// LaunchJob.

// SubmitUpdate implements coordinatorv1.CoordinatorServer.
func (s *Service) SubmitUpdate(ctx context.Context, req *coordinatorv1.SubmitUpdateRequest) (*coordinatorv1.SubmitUpdateResponse, error) {
	trainer := s.sessions.trainerOf(req.Session)
	if err := s.lock(ctx); err != nil {
		return nil, unavailable(err)
	}
	var jobName string
	if s.job != nil {
		jobName = s.job.job.Name
	}
	s.mu.Unlock()
	if peer, err := tlsid.PeerID(ctx); err == nil && trainer != "" && peer != trainer {
		return nil, status.Errorf(codes.PermissionDenied, "submit update: the session belongs to %s, not to the TLS peer %s", abbrev(trainer), abbrev(peer))
	}
	switch {
	case trainer == "":
		return nil, status.Error(codes.FailedPrecondition, "submit update: unknown session; join again")
	case jobName == "" || req.JobId != jobName:
		return nil, status.Errorf(codes.FailedPrecondition, "submit update: job %q is not running", req.JobId)
	}
	var ev Event
	if req.Error != "" {
		ev = UpdateInvalid{Round: req.Round, Trainer: trainer, Reason: "trainer failed: " + req.Error}
	} else {
		d, err := artifact.ParseDigest(req.UpdateDigest)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "submit update: %v", err)
		}
		if ok, err := s.cfg.Store.Has(d); err != nil || !ok {
			return nil, status.Errorf(codes.FailedPrecondition, "submit update: update %s is not in the artifact store; upload it first", d)
		}
		// The ledger is the record: take the update as the trainer's
		// UpdateSubmitted states it, read at least at the height the
		// trainer says it committed at (the node read may apply that block
		// a moment after the node the trainer submitted through; it waits
		// for it, bounded).
		r, err := s.cfg.Ledger.Round(ctx, req.JobId, req.Round, req.CommittedHeight)
		if err != nil {
			code := codes.FailedPrecondition
			if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
				code = codes.Unavailable // the ledger node did not get to the height: try again
			}
			return nil, status.Errorf(code, "submit update: %v", err)
		}
		var u *ledger.Update
		for i := range r.Updates {
			if r.Updates[i].Trainer == trainer {
				u = &r.Updates[i]
			}
		}
		switch {
		case u == nil:
			return nil, status.Errorf(codes.FailedPrecondition, "submit update: the ledger has no UpdateSubmitted of %s in job %s round %d; submit it first", abbrev(trainer), req.JobId, req.Round)
		case u.UpdateDigest != d:
			return nil, status.Errorf(codes.InvalidArgument, "submit update: the ledger records update %s, not %s", u.UpdateDigest, d)
		}
		ds, err := s.cfg.Ledger.Dataset(ctx, u.DatasetDigest)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "submit update: dataset %s: %v", u.DatasetDigest, err)
		}
		ev = UpdateArrived{Round: req.Round, Trainer: trainer, Digest: d, Dataset: u.DatasetDigest, Samples: u.Samples, Metrics: u.Metrics,
			DatasetName: ds.Name, Licence: ds.Licence}
	}
	if err := s.lock(ctx); err != nil {
		return nil, unavailable(err)
	}
	stepErr := func() error {
		defer s.mu.Unlock()
		if s.job == nil || s.job.job.Name != req.JobId {
			return fmt.Errorf("job %q is not running", req.JobId)
		}
		rd, err := s.job.m.Step(ev)
		if err != nil {
			return err
		}
		s.log.InfoContext(ctx, "update arrived", "round", req.Round, "trainer", abbrev(trainer), "error", req.Error)
		s.carry(s.job, rd)
		return nil
	}()
	if stepErr != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "submit update: %v", stepErr)
	}
	return &coordinatorv1.SubmitUpdateResponse{}, nil
}

// LaunchJob implements coordinatorv1.CoordinatorServer.
func (s *Service) LaunchJob(ctx context.Context, req *coordinatorv1.LaunchJobRequest) (*coordinatorv1.LaunchJobResponse, error) {
	if err := s.mayLaunch(ctx); err != nil {
		return nil, err
	}
	name := req.Source
	if name == "" {
		name = "job.yaml"
	}
	job, err := ParseJob(name, req.JobYaml)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "launch: %v", err)
	}
	job.Source = req.Source
	if err := s.score.checkData(ctx, job); errors.Is(err, errEvalDataUnchecked) {
		return nil, status.Errorf(codes.Unavailable, "launch: %v", err)
	} else if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "launch: %v", err)
	}
	if busy := s.busy(ctx); busy != nil {
		return nil, busy
	}
	rounds, err := ledgerRounds(ctx, s.cfg.Ledger, job.Name)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "launch: %v", err)
	}
	if len(rounds) > 0 {
		return nil, status.Errorf(codes.AlreadyExists, "launch: the ledger already holds %d rounds of job %s; give the job a new name", len(rounds), job.Name)
	}
	// Job IDs are first come, first served: the first JobRegistered of an
	// ID makes its signer the job's owner, and only the owner opens its
	// rounds. A name another coordinator registered (squatted or not) is
	// refused here, before anything is written to the ledger.
	if rec, err := s.cfg.Ledger.Job(ctx, job.Name); err == nil && rec.Cancelled != nil {
		return nil, status.Errorf(codes.AlreadyExists, "launch: job %s was cancelled at height %d (%s); a cancelled job does not run again: give the job a new name (name: in the job file)",
			job.Name, rec.Cancelled.Height, rec.Cancelled.Reason)
	} else if err == nil && rec.Owner != s.id {
		return nil, status.Errorf(codes.AlreadyExists, "launch: job %s is registered on the ledger by coordinator %s (height %d), not by this coordinator %s; job IDs belong to the coordinator that registers them first: rename the job (name: in the job file)",
			job.Name, rec.Owner, rec.Height, s.id)
	} else if err != nil && !errors.Is(err, ledger.ErrRecordNotFound) {
		return nil, status.Errorf(codes.Unavailable, "launch: %v", err)
	}
	j, err := s.jobs.prepare(ctx, job, nil)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "launch: %v", err)
	}
	launcher, _ := tlsid.PeerID(ctx) // "" over plain text
	if err := s.jobs.saveActive(req.JobYaml, req.Source); err != nil {
		return nil, status.Errorf(codes.Internal, "launch: %v", err)
	}
	if err := s.jobs.saveLauncher(launcher); err != nil {
		return nil, status.Errorf(codes.Internal, "launch: %v", err)
	}
	if err := s.lock(ctx); err != nil {
		return nil, unavailable(err)
	}
	defer s.mu.Unlock()
	if s.job != nil && !s.job.m.Done() {
		return nil, s.stillRunning()
	}
	j.launcher = launcher
	s.start(j)
	return &coordinatorv1.LaunchJobResponse{JobId: job.Name, ConfigDigest: job.Digest(), BaseModel: j.base}, nil
}

// busy refuses a launch while a job runs (one job runs at a time).
func (s *Service) busy(ctx context.Context) error {
	if err := s.lock(ctx); err != nil {
		return unavailable(err)
	}
	defer s.mu.Unlock()
	if s.job != nil && !s.job.m.Done() {
		return s.stillRunning()
	}
	return nil
}

// stillRunning is the refusal of a launch while s.job runs (s.mu held):
// the running job, what it waits for, and how to follow it.
func (s *Service) stillRunning() error {
	j := s.job
	what := ""
	if j.detail != "" {
		what = " (" + j.detail + ")"
	}
	return status.Errorf(codes.FailedPrecondition, "launch: job %s is still running%s; one job runs at a time: launch again once it has ended (fedtune round status %s), or stop it (fedtune round cancel %s --reason TEXT, with its launcher's or an admin's key)",
		j.job.Name, what, j.job.Name, j.job.Name)
}

// mayLaunch admits a LaunchJob caller: over TLS, the coordinator's own key
// or an active admin or coordinator member; over plain text, anyone (the
// --insecure mode is for a trusted localhost).
func (s *Service) mayLaunch(ctx context.Context) error {
	peer, err := tlsid.PeerID(ctx)
	if err != nil || peer == s.id {
		return nil
	}
	m, err := s.cfg.Ledger.Member(ctx, peer)
	if err != nil || !m.Active || (m.Role != ledger.RoleAdmin && m.Role != ledger.RoleCoordinator) {
		return status.Errorf(codes.PermissionDenied, "launch: %s is not an active admin or coordinator member", abbrev(peer))
	}
	return nil
}
