package coordinator

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// mayProve admits a ProveSample caller and returns who it is: in plain-text
// mode (ServiceConfig.Insecure, for a trusted localhost) anyone, all as
// one caller ""; over TLS the coordinator's own key, or an active ledger
// member with role auditor or admin.
func (s *Service) mayProve(ctx context.Context) (string, error) {
	if s.cfg.Insecure {
		return "", nil
	}
	peer, err := tlsid.PeerID(ctx)
	if err != nil {
		return "", status.Errorf(codes.Unauthenticated, "prove sample: no TLS peer identity: %v", err)
	}
	if peer == s.id {
		return peer, nil
	}
	m, err := s.cfg.Ledger.Member(ctx, peer)
	switch {
	case errors.Is(err, ledger.ErrRecordNotFound) || (err == nil && !m.Active):
		return "", status.Errorf(codes.PermissionDenied, "prove sample: %s is not an active ledger member", abbrev(peer))
	case err != nil:
		return "", status.Errorf(codes.Unavailable, "prove sample: cannot read the caller's membership: %v", err)
	case m.Role != ledger.RoleAuditor && m.Role != ledger.RoleAdmin:
		return "", status.Errorf(codes.PermissionDenied, "prove sample: %s is a %s member; only auditor and admin members may ask for proofs", abbrev(peer), m.Role)
	}
	return peer, nil
}

// ProveSample implements coordinatorv1.CoordinatorServer: it relays the
// question to every named dataset's trainer at once and collects the
// answers, each within the request's timeout. Questions travel on each
// session's own proof queue, never delaying or displacing a training task;
// a question over the per-trainer, per-caller or coordinator limit is
// answered BUSY at once.
func (s *Service) ProveSample(ctx context.Context, req *coordinatorv1.ProveSampleRequest) (*coordinatorv1.ProveSampleResponse, error) {
	switch {
	case len(req.LeafHash) != 32:
		return nil, status.Errorf(codes.InvalidArgument, "prove sample: leaf_hash has %d bytes, want 32 (the sample's SHA-256)", len(req.LeafHash))
	case len(req.Datasets) == 0:
		return nil, status.Error(codes.InvalidArgument, "prove sample: no datasets named")
	case len(req.Datasets) > MaxProveDatasets:
		return nil, status.Errorf(codes.InvalidArgument, "prove sample: %d datasets, limit %d (ask in batches)", len(req.Datasets), MaxProveDatasets)
	case req.TimeoutMs < 0:
		return nil, status.Errorf(codes.InvalidArgument, "prove sample: timeout_ms %d is negative", req.TimeoutMs)
	}
	seen := make(map[string]int, len(req.Datasets))
	for i, d := range req.Datasets {
		if !digest.Valid(d.Dataset) || !digest.Valid(d.Trainer) {
			return nil, status.Errorf(codes.InvalidArgument, "prove sample: datasets[%d]: dataset and trainer must be 64 lowercase hex (got %q, %q)", i, abbrev(d.Dataset), abbrev(d.Trainer))
		}
		if j, dup := seen[d.Dataset]; dup {
			return nil, status.Errorf(codes.InvalidArgument, "prove sample: datasets[%d]: dataset %s is named again (first at datasets[%d]); name each dataset once", i, d.Dataset, j)
		}
		seen[d.Dataset] = i
	}
	caller, err := s.mayProve(ctx)
	if err != nil {
		return nil, err
	}
	timeout := DefaultProveTimeout
	if req.TimeoutMs > 0 {
		timeout = min(time.Duration(req.TimeoutMs)*time.Millisecond, MaxProveTimeout)
	}
	answers := make([]*coordinatorv1.ProofAnswer, len(req.Datasets))
	var wg sync.WaitGroup
	for i, d := range req.Datasets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = s.askTrainer(ctx, caller, req.LeafHash, d, timeout)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return &coordinatorv1.ProveSampleResponse{Answers: answers}, nil
}

// askTrainer sends one proof question to d's trainer and waits for its
// answer.
func (s *Service) askTrainer(ctx context.Context, caller string, leaf []byte, d *coordinatorv1.DatasetRef, timeout time.Duration) *coordinatorv1.ProofAnswer {
	out := &coordinatorv1.ProofAnswer{Dataset: d.Dataset, Trainer: d.Trainer}
	p := &pendingProof{trainer: d.Trainer, dataset: d.Dataset, caller: caller, answer: make(chan *coordinatorv1.SubmitProofRequest, 1)}
	id, busy := s.prove.add(p)
	if busy != "" {
		out.Status, out.Detail = coordinatorv1.ProofStatus_PROOF_STATUS_BUSY, busy
		return out
	}
	defer s.prove.remove(id)
	task := &coordinatorv1.Task{Prove: &coordinatorv1.ProveTask{RequestId: id, LeafHash: leaf, Dataset: d.Dataset}}
	connected, sent := s.sessions.sendProof(d.Trainer, task)
	switch {
	case !connected:
		out.Status, out.Detail = coordinatorv1.ProofStatus_PROOF_STATUS_NOT_CONNECTED, "trainer not connected"
		return out
	case !sent:
		out.Status, out.Detail = coordinatorv1.ProofStatus_PROOF_STATUS_BUSY, "the trainer's proof queue is full"
		return out
	}
	s.log.InfoContext(ctx, "proof requested", "trainer", abbrev(d.Trainer), "dataset", abbrev(d.Dataset), "request", id[:8])
	timer := s.clock.After(timeout)
	select {
	case a := <-p.answer:
		if a.Error != "" {
			out.Status, out.Detail = coordinatorv1.ProofStatus_PROOF_STATUS_REFUSED, a.Error
			return out
		}
		out.Status, out.Proof = coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED, a.Proof
	case <-timer:
		out.Status, out.Detail = coordinatorv1.ProofStatus_PROOF_STATUS_TIMEOUT, "no answer from the trainer within "+timeout.String()
	case <-ctx.Done():
		out.Status, out.Detail = coordinatorv1.ProofStatus_PROOF_STATUS_TIMEOUT, ctx.Err().Error()
	}
	return out
}

// SubmitProof implements coordinatorv1.CoordinatorServer: a trainer's
// answer to a proof question sent to its session. Only the trainer asked
// may answer, once.
func (s *Service) SubmitProof(ctx context.Context, req *coordinatorv1.SubmitProofRequest) (*coordinatorv1.SubmitProofResponse, error) {
	if len(req.Proof) > MaxProofAnswerBytes {
		return nil, status.Errorf(codes.InvalidArgument, "submit proof: %d bytes, limit %d", len(req.Proof), MaxProofAnswerBytes)
	}
	if len(req.Error) > ledger.MaxReasonLen {
		req.Error = strings.ToValidUTF8(req.Error[:ledger.MaxReasonLen], "")
	}
	trainer := s.sessions.trainerOf(req.Session)
	if trainer == "" {
		return nil, status.Error(codes.FailedPrecondition, "submit proof: unknown session; join again")
	}
	if peer, err := tlsid.PeerID(ctx); err == nil && peer != trainer {
		return nil, status.Errorf(codes.PermissionDenied, "submit proof: the session belongs to %s, not to the TLS peer %s", abbrev(trainer), abbrev(peer))
	}
	p := s.prove.take(req.RequestId, trainer)
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "submit proof: no open proof request %q for trainer %s (answered, timed out, or not asked)", abbrev(req.RequestId), abbrev(trainer))
	}
	p.answer <- req
	return &coordinatorv1.SubmitProofResponse{}, nil
}
