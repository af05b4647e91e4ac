package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/ledger"
)

// Status implements coordinatorv1.CoordinatorServer.
func (s *Service) Status(ctx context.Context, req *coordinatorv1.StatusRequest) (*coordinatorv1.StatusResponse, error) {
	s.stMu.Lock()
	cur := s.status
	s.stMu.Unlock()
	jobID := req.JobId
	if cur == nil && jobID == "" {
		// No job yet: say who is connected.
		return &coordinatorv1.StatusResponse{State: JobIdle, Joined: s.sessions.joined()}, nil
	}
	resp := &coordinatorv1.StatusResponse{JobId: jobID}
	if cur != nil && (jobID == "" || jobID == cur.JobId) {
		resp = cloneStatus(cur)
	}
	rounds, err := ledgerRounds(ctx, s.cfg.Ledger, resp.JobId)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "status: %v", err)
	}
	if resp.State == "" {
		// Not the running job: the ledger's record says whether it was
		// cancelled.
		resp.State = "recorded"
		if rec, err := s.cfg.Ledger.Job(ctx, resp.JobId); err == nil && rec.Cancelled != nil {
			resp.State, resp.Detail = JobCancelled, fmt.Sprintf("cancelled at height %d: %s", rec.Cancelled.Height, rec.Cancelled.Reason)
		}
	}
	if len(rounds) == 0 && (cur == nil || cur.JobId != resp.JobId) && resp.State != JobCancelled {
		return nil, status.Errorf(codes.NotFound, "status: the ledger holds no rounds of job %s", resp.JobId)
	}
	lagging := false
	for _, r := range rounds {
		resp.Rounds = append(resp.Rounds, roundProto(r))
		if r.Status == ledger.StatusCommitted {
			resp.Model = r.ModelDigest
		}
		lagging = lagging || r.Status == ledger.StatusOpen
	}
	s.ev.fill(resp)
	// The machine learns a round's fate from the ledger leader; the node
	// this status reads from may not have applied that block yet. Do not
	// call a job finished until its record here is.
	if resp.State == JobDone && len(rounds) < int(resp.RoundsTotal) {
		lagging = true
	}
	if (resp.State == JobDone || resp.State == JobFailed || resp.State == JobCancelled) && lagging {
		resp.State, resp.Detail = JobRunning, "the ledger node has not applied the last round's outcome yet"
	}
	return resp, nil
}

func roundProto(r ledger.Round) *coordinatorv1.Round {
	out := &coordinatorv1.Round{Round: r.Round, Status: string(r.Status), BaseModel: r.BaseModel, ModelDigest: r.ModelDigest,
		Selected: slices.Clone(r.Trainers), FailReason: r.FailReason}
	weights := map[string]float64{}
	for _, c := range r.Contributors {
		weights[c.Trainer] = c.Weight
	}
	for _, u := range r.Updates {
		out.Updates = append(out.Updates, &coordinatorv1.TrainerUpdate{Trainer: u.Trainer, UpdateDigest: u.UpdateDigest,
			DatasetDigest: u.DatasetDigest, Samples: u.Samples, Metrics: u.Metrics, Rejected: u.Rejected,
			RejectReason: u.RejectReason, Weight: weights[u.Trainer]})
	}
	return out
}

func cloneStatus(st *coordinatorv1.StatusResponse) *coordinatorv1.StatusResponse {
	return &coordinatorv1.StatusResponse{JobId: st.JobId, State: st.State, Detail: st.Detail, RoundsTotal: st.RoundsTotal,
		BaseModel: st.BaseModel, Joined: slices.Clone(st.Joined), Mode: st.Mode}
}

// publishStatus refreshes the live view Status serves (s.mu held).
func (s *Service) publishStatus() {
	j := s.job
	if j == nil {
		return
	}
	st := &coordinatorv1.StatusResponse{JobId: j.job.Name, RoundsTotal: int32(j.job.Rounds), BaseModel: j.base,
		Detail: j.detail, Mode: j.job.FineTune.Mode}
	switch {
	case j.result != nil && j.result.Cancelled:
		st.State = JobCancelled
	case j.result != nil && j.result.Err != "":
		st.State = JobFailed
	case j.result != nil:
		st.State = JobDone
	case j.m.st == stWaiting:
		st.State = JobWaiting
	default:
		st.State = JobRunning
	}
	if r := s.ev.pending(j.job.Name); r > 0 && st.State == JobDone {
		// Done once the final model's evaluation is in the status.
		st.State, st.Detail = JobRunning, strings.TrimPrefix(fmt.Sprintf("%s; evaluating round %d's model", st.Detail, r), "; ")
	} else if n := s.evalTxs[s.gen]; n > 0 && st.State == JobDone {
		// … and on the ledger.
		st.State, st.Detail = JobRunning, strings.TrimPrefix(fmt.Sprintf("%s; recording %d evaluation(s) on the ledger", st.Detail, n), "; ")
	}
	st.Joined = s.sessions.joined()
	s.stMu.Lock()
	s.status = st
	s.stMu.Unlock()
	if s.onPublish != nil {
		s.onPublish(st)
	}
}
