package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// The trainers' side of the service: a join challenge, the Join that
// answers it (checked against the ledger's membership and datasets), and
// the Tasks stream of a session (sessions.go), which tells the machine
// that the trainer joined and, when it closes, that it left.

// Challenge implements coordinatorv1.CoordinatorServer. Anyone may ask,
// so a caller (its TLS key, else its host) holds at most
// MaxChallengesPerCaller unanswered challenges, and all callers together
// MaxChallenges (the oldest go first).
func (s *Service) Challenge(ctx context.Context, _ *coordinatorv1.ChallengeRequest) (*coordinatorv1.ChallengeResponse, error) {
	c, err := client.NewChallenge(rand.Reader)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	caller := challengeCaller(ctx)
	evicted, err := s.challenges.issue(string(c), caller, s.clock.Now(), challengeTTL)
	if err != nil {
		s.log.DebugContext(ctx, "join challenge refused", "caller", showCaller(caller), "err", err)
		return nil, err
	}
	if evicted > 0 {
		s.log.DebugContext(ctx, "join challenges at their limit; the oldest dropped", "limit", MaxChallenges, "dropped", evicted)
	}
	return &coordinatorv1.ChallengeResponse{Challenge: c, CoordinatorId: s.id}, nil
}

// Join implements coordinatorv1.CoordinatorServer.
func (s *Service) Join(ctx context.Context, req *coordinatorv1.JoinRequest) (*coordinatorv1.JoinResponse, error) {
	if !s.challenges.take(string(req.Challenge), s.clock.Now()) {
		return nil, status.Error(codes.FailedPrecondition, "join: unknown or expired challenge; ask for a new one")
	}
	pub := ed25519.PublicKey(req.PublicKey)
	if err := client.VerifyChallenge(pub, req.Challenge, req.Signature); err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "join: %v", err)
	}
	id := ledger.KeyID(pub)
	if peerID, err := tlsid.PeerID(ctx); err == nil && peerID != id {
		return nil, status.Errorf(codes.PermissionDenied, "join: the TLS peer is %s but the join is signed by %s", abbrev(peerID), abbrev(id))
	}
	mem, err := s.cfg.Ledger.Member(ctx, id)
	switch {
	case errors.Is(err, ledger.ErrRecordNotFound):
		return nil, status.Errorf(codes.PermissionDenied, "join: %s is not a member of the ledger; an admin must add it with role trainer (fedtune admin add-member)", id)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "join: %v", err)
	case !mem.Active:
		return nil, status.Errorf(codes.PermissionDenied, "join: %s was removed from the ledger (%s)", id, mem.RemovedReason)
	case mem.Role != ledger.RoleTrainer:
		return nil, status.Errorf(codes.PermissionDenied, "join: %s has role %s on the ledger, not trainer", id, mem.Role)
	}
	var datasets []string
	for _, d := range req.Datasets {
		ds, err := s.cfg.Ledger.Dataset(ctx, d)
		// The trainer may have registered it through another node a moment ago.
		for wait := s.clock.Now().Add(5 * time.Second); errors.Is(err, ledger.ErrRecordNotFound) && s.clock.Now().Before(wait); {
			select {
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			case <-s.clock.After(50 * time.Millisecond):
			}
			ds, err = s.cfg.Ledger.Dataset(ctx, d)
		}
		switch {
		case errors.Is(err, ledger.ErrRecordNotFound):
			return nil, status.Errorf(codes.FailedPrecondition, "join: dataset %s is not registered on the ledger", d)
		case err != nil:
			return nil, status.Errorf(codes.Unavailable, "join: %v", err)
		case ds.Owner != id:
			return nil, status.Errorf(codes.PermissionDenied, "join: dataset %s was registered by %s, not by %s", d, abbrev(ds.Owner), abbrev(id))
		}
		datasets = append(datasets, d)
	}
	sid, err := s.sessions.open(id, datasets, s.clock.Now())
	if err != nil {
		s.log.WarnContext(ctx, "join refused", "trainer", abbrev(id), "err", err)
		return nil, err
	}
	s.log.InfoContext(ctx, "trainer joined", "trainer", abbrev(id), "datasets", len(datasets))
	return &coordinatorv1.JoinResponse{Session: sid, TrainerId: id}, nil
}

// Tasks implements coordinatorv1.CoordinatorServer.
func (s *Service) Tasks(req *coordinatorv1.TasksRequest, stream coordinatorv1.Coordinator_TasksServer) error {
	ctx := stream.Context()
	if err := s.lock(ctx); err != nil {
		return unavailable(err)
	}
	ss := s.sessions.activate(req.Session, func(trainer string) bool {
		peer, err := tlsid.PeerID(ctx)
		return err != nil || peer == trainer
	})
	if ss != nil && s.job != nil {
		s.step(MembersChanged{Trainers: s.sessions.memberList()})
		s.step(TrainerJoined{Trainer: ss.trainer, Datasets: ss.datasets})
	}
	s.publishStatus()
	s.mu.Unlock()
	if ss == nil {
		return status.Error(codes.FailedPrecondition, "tasks: unknown or already streaming session; join again")
	}
	defer func() {
		// Under s.mu, as activate: a newer session of the trainer either
		// replaced this one already (then it is no longer the table's) or
		// joins after this leave.
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.sessions.leave(ss) {
			return
		}
		s.log.InfoContext(ctx, "trainer left", "trainer", abbrev(ss.trainer))
		s.step(TrainerLeft{Trainer: ss.trainer})
		s.publishStatus()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ss.done:
			return status.Error(codes.Aborted, "tasks: session replaced or coordinator stopping")
		case t := <-ss.tasks:
			if err := stream.Send(t); err != nil {
				return err
			}
		case t := <-ss.proofs:
			if err := stream.Send(t); err != nil {
				return err
			}
		}
	}
}
