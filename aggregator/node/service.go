package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator/round"
	aggregatorv1 "github.com/fedtune/fedtune/api/aggregator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Service implements aggregatorv1.AggregatorServer over a local store,
// the coordinator's artifact service and a ledger signer.
type Service struct {
	aggregatorv1.UnimplementedAggregatorServer

	local       *round.Local
	store       *artifact.Store
	artifacts   *artifact.Client
	ledger      *client.Client
	coordinator string // allowed peer ID ("" over plain text)
	log         *slog.Logger

	mu      sync.Mutex
	commits map[roundID]ledger.RoundCommitted // derived by Aggregate, signed by SubmitTx
}

type roundID struct {
	job   string
	round uint64
}

// NewService returns a service that fetches from and uploads to
// artifacts, reads job recipes and rounds from lc, aggregates and signs
// through local, and admits only the peer coordinatorID when the link has
// TLS identities.
func NewService(local *round.Local, store *artifact.Store, artifacts *artifact.Client, lc *client.Client, coordinatorID string, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{local: local, store: store, artifacts: artifacts, ledger: lc, coordinator: coordinatorID, log: log,
		commits: map[roundID]ledger.RoundCommitted{}}
	if artifacts != nil {
		local.Fetch = func(ctx context.Context, d string) error {
			_, err := artifacts.Fetch(ctx, d, store)
			return err
		}
	}
	return s
}

// Register adds the Aggregator service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) { aggregatorv1.RegisterAggregatorServer(r, s) }

// admit checks the TLS peer (a second line behind the handshake's check).
func (s *Service) admit(ctx context.Context) error {
	peer, err := tlsid.PeerID(ctx)
	if err != nil || s.coordinator == "" || peer == s.coordinator {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "aggregator: %s is not the coordinator %s", peer, s.coordinator)
}

// Identity implements aggregatorv1.AggregatorServer.
func (s *Service) Identity(ctx context.Context, _ *aggregatorv1.IdentityRequest) (*aggregatorv1.IdentityResponse, error) {
	if err := s.admit(ctx); err != nil {
		return nil, err
	}
	return &aggregatorv1.IdentityResponse{AggregatorId: s.local.ID()}, nil
}

// Aggregate implements aggregatorv1.AggregatorServer.
func (s *Service) Aggregate(ctx context.Context, req *aggregatorv1.AggregateRequest) (*aggregatorv1.AggregateResponse, error) {
	if err := s.admit(ctx); err != nil {
		return nil, err
	}
	a, global := round.FromProto(req)
	if len(a.Inputs) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "aggregate job %s round %d: no inputs", a.JobID, a.Round)
	}
	recipe, global, err := s.fromLedger(ctx, &a, global)
	if err != nil {
		return nil, err
	}
	log := s.log.With("job", a.JobID, "round", a.Round)
	// The local aggregator fetches the inputs, the reference and the
	// state from the artifact store (the store checks each blob's
	// SHA-256 against its digest), rejects itself the inputs it cannot
	// fetch and the round's updates on the ledger that are no inputs and
	// not in the store, and records what it rejected and whether it failed.
	done, err := s.local.Aggregate(ctx, a, global)
	switch {
	case errors.Is(err, round.ErrRefused):
		return nil, status.Errorf(codes.FailedPrecondition, "aggregate job %s round %d: %v", a.JobID, a.Round, err)
	case err != nil:
		return nil, status.Errorf(codes.Aborted, "aggregate job %s round %d: %v", a.JobID, a.Round, err)
	}
	for _, d := range []string{done.Model, done.State} {
		if d == "" {
			continue
		}
		if err := s.upload(ctx, d); err != nil {
			return nil, status.Errorf(codes.Unavailable, "aggregate job %s round %d: %v", a.JobID, a.Round, err)
		}
	}
	// The commit this aggregator will sign: from the recipe and the
	// ledger's updates, never from a body the coordinator sends.
	rc := ledger.RoundCommitted{JobID: a.JobID, Round: a.Round, ModelDigest: done.Model, Strategy: recipe.Strategy, Params: recipe.CommitParams()}
	if done.State != "" {
		rc.Params[ledger.ParamServerState] = done.State
	}
	for _, in := range a.Inputs {
		if w, ok := done.Weights[in.Trainer]; ok {
			rc.Contributors = append(rc.Contributors, ledger.Contribution{Trainer: in.Trainer, UpdateDigest: in.Digest, Weight: w})
		}
	}
	slices.SortFunc(rc.Contributors, func(x, y ledger.Contribution) int { return strings.Compare(x.Trainer, y.Trainer) })
	s.mu.Lock()
	s.commits[roundID{a.JobID, a.Round}] = rc
	s.mu.Unlock()
	log.InfoContext(ctx, "aggregated", "model", done.Model, "accepted", len(done.Weights), "rejected", len(done.Rejected))
	return &aggregatorv1.AggregateResponse{Model: done.Model, State: done.State, Weights: done.Weights, Rejected: done.Rejected}, nil
}

// upload sends blob d of the local store to the coordinator.
func (s *Service) upload(ctx context.Context, d string) error {
	p, err := s.store.Path(d)
	if err != nil {
		return err
	}
	got, _, err := s.artifacts.UploadFile(ctx, p)
	if err != nil {
		return fmt.Errorf("upload %s: %w", d, err)
	}
	if got != d {
		return fmt.Errorf("upload %s: the local blob hashes to %s", d, got)
	}
	return nil
}

// SubmitTx implements aggregatorv1.AggregatorServer.
func (s *Service) SubmitTx(ctx context.Context, req *aggregatorv1.SubmitTxRequest) (*aggregatorv1.SubmitTxResponse, error) {
	if err := s.admit(ctx); err != nil {
		return nil, err
	}
	body, err := round.DecodeTx(req.Type, req.Body)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "submit: %v", err)
	}
	// A commit is the one this aggregator derived itself when it
	// aggregated the round (Aggregate): the coordinator's body only asks
	// for it, and must say the same.
	if rc, ok := body.(ledger.RoundCommitted); ok {
		s.mu.Lock()
		own, ok := s.commits[roundID{rc.JobID, rc.Round}]
		s.mu.Unlock()
		if !ok {
			return nil, status.Errorf(codes.FailedPrecondition,
				"submit: RoundCommitted of job %s round %d names model %s, which this aggregator did not produce", rc.JobID, rc.Round, rc.ModelDigest)
		}
		if diff := commitDiff(own, rc); diff != "" {
			return nil, status.Errorf(codes.FailedPrecondition,
				"submit: RoundCommitted of job %s round %d differs from the commit this aggregator derived from the recipe and the ledger's updates: %s", rc.JobID, rc.Round, diff)
		}
		body = own
	}
	// An UpdateRejected or RoundFailed is signed only as this aggregator
	// derived it itself (round.Own.Vet, inside Submit).
	h, err := s.local.Submit(ctx, body)
	switch {
	case errors.Is(err, round.ErrNotOwn):
		return nil, status.Errorf(codes.FailedPrecondition, "submit: %v", err)
	case errors.Is(err, client.ErrRejected):
		return nil, client.StatusError(codes.FailedPrecondition, err)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "submit: %v", err)
	}
	if rc, ok := body.(ledger.RoundCommitted); ok {
		s.mu.Lock()
		delete(s.commits, roundID{rc.JobID, rc.Round})
		s.mu.Unlock()
	}
	s.log.InfoContext(ctx, "tx committed", "type", req.Type, "height", h)
	return &aggregatorv1.SubmitTxResponse{Height: h}, nil
}

// inputWait bounds how long Aggregate waits for the ledger to show a
// round's inputs.
const inputWait = 20 * time.Second

// fromLedger replaces what the request says about the round's rules and
// inputs with what the ledger records: the job's recipe (which must
// designate this aggregator) gives the strategy, parameters and privacy
// options; every input must be a submitted, not rejected, update of the
// open round, and its sample count is the ledger's.
func (s *Service) fromLedger(ctx context.Context, a *round.Task, global string) (*ledger.RoundRecipe, string, error) {
	where := fmt.Sprintf("aggregate job %s round %d", a.JobID, a.Round)
	start := time.Now()
	if s.ledger == nil {
		return nil, "", status.Errorf(codes.FailedPrecondition, "%s: no ledger to read the job's recipe from", where)
	}
	job, err := s.ledger.Job(ctx, a.JobID)
	if err != nil {
		return nil, "", status.Errorf(codes.FailedPrecondition, "%s: the job's recipe: %v", where, err)
	}
	rc := &job.Recipe
	if !rc.Designates(s.local.ID()) {
		return nil, "", status.Errorf(codes.PermissionDenied, "%s: the job's recipe designates aggregators %v, not this one (%s)", where, rc.Aggregators, s.local.ID())
	}
	params, err := rc.StrategyParams()
	if err != nil {
		return nil, "", status.Errorf(codes.FailedPrecondition, "%s: recipe: %v", where, err)
	}
	// The ledger node this aggregator reads may lag behind the one a
	// trainer submitted to: wait a while for every input to show.
	var byTrainer map[string]ledger.Update
	var cur *ledger.Round
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		r, err := s.ledger.Round(ctx, a.JobID, a.Round)
		if err != nil {
			return nil, "", status.Errorf(codes.FailedPrecondition, "%s: %v", where, err)
		}
		if r.Status != ledger.StatusOpen {
			return nil, "", status.Errorf(codes.FailedPrecondition, "%s: the round is %s on the ledger", where, r.Status)
		}
		cur = r
		byTrainer = map[string]ledger.Update{}
		for _, u := range r.Updates {
			byTrainer[u.Trainer] = u
		}
		missing := 0
		for _, in := range a.Inputs {
			if _, ok := byTrainer[in.Trainer]; !ok {
				missing++
			}
		}
		if missing == 0 || wait >= time.Second && time.Since(start) > inputWait {
			break
		}
		select {
		case <-ctx.Done():
			return nil, "", status.FromContextError(ctx.Err()).Err()
		case <-time.After(wait):
		}
	}
	seen := map[string]bool{}
	for i, in := range a.Inputs {
		u, ok := byTrainer[in.Trainer]
		switch {
		case seen[in.Trainer]:
			return nil, "", status.Errorf(codes.InvalidArgument, "%s: inputs[%d]: trainer %s is listed twice", where, i, in.Trainer)
		case !ok || u.UpdateDigest != in.Digest:
			return nil, "", status.Errorf(codes.InvalidArgument, "%s: inputs[%d]: trainer %s submitted no update %s to the round on the ledger", where, i, in.Trainer, in.Digest)
		case u.Rejected:
			return nil, "", status.Errorf(codes.InvalidArgument, "%s: inputs[%d]: update %s was rejected on the ledger: %s", where, i, in.Digest, u.RejectReason)
		}
		seen[in.Trainer] = true
		a.Inputs[i].Samples, a.Inputs[i].Dataset = u.Samples, u.DatasetDigest
	}
	ref, err := s.reference(ctx, where, a, global, rc, cur)
	if err != nil {
		return nil, "", err
	}
	a.Strategy, a.Params = rc.Strategy, params
	a.Options.Clip, a.Options.NoiseMultiplier, a.Options.MaxNorm, a.Options.Seed = rc.Clip, rc.NoiseMultiplier, rc.MaxNorm, 0
	return rc, ref, nil
}

// reference checks the request's base, reference global and server state
// against the ledger and returns the reference global: the base is the
// round's BaseModel; after a committed round, that must be the last
// committed model, which is also the reference, and the state is that
// commit's server_state; before any, the reference is the recipe's
// InitialAdapter for a LoRA job (else the round's base) and there is no
// state. A request that names anything else is refused.
func (s *Service) reference(ctx context.Context, where string, a *round.Task, global string, rc *ledger.RoundRecipe, r *ledger.Round) (string, error) {
	rounds, err := s.ledger.Rounds(ctx, a.JobID)
	if err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "%s: the job's rounds: %v", where, err)
	}
	ref, code, err := ledgerReference(a, global, rc, r, rounds)
	if err != nil {
		return "", status.Errorf(code, "%s: %v", where, err)
	}
	return ref, nil
}

// ledgerReference is reference over the job's rounds on the ledger.
func ledgerReference(a *round.Task, global string, rc *ledger.RoundRecipe, r *ledger.Round, rounds []ledger.Round) (string, codes.Code, error) {
	var prev *ledger.Round
	for i := range rounds {
		if q := &rounds[i]; q.Status == ledger.StatusCommitted && q.Round < a.Round && (prev == nil || q.Round > prev.Round) {
			prev = q
		}
	}
	ref, state, from := r.BaseModel, "", "the round's base model on the ledger"
	switch {
	case prev != nil && r.BaseModel != prev.ModelDigest:
		return "", codes.FailedPrecondition, fmt.Errorf("the round's base model on the ledger is %s, not the model %s that round %d committed", r.BaseModel, prev.ModelDigest, prev.Round)
	case prev != nil:
		state = prev.Params[ledger.ParamServerState]
		from = fmt.Sprintf("the model round %d committed", prev.Round)
	case rc.InitialAdapter != "":
		ref, from = rc.InitialAdapter, "the recipe's initial adapter"
	}
	switch {
	case a.Base != r.BaseModel:
		return "", codes.InvalidArgument, fmt.Errorf("the request names base model %q; the round's base model on the ledger is %s", a.Base, r.BaseModel)
	case global != ref:
		return "", codes.InvalidArgument, fmt.Errorf("the request names reference weights %q; the ledger gives %s (%s)", global, ref, from)
	case a.State != state:
		return "", codes.InvalidArgument, fmt.Errorf("the request names server state %q; the ledger gives %q (the server_state of the job's last commit)", a.State, state)
	}
	a.Base, a.State = r.BaseModel, state
	return ref, codes.OK, nil
}

// commitDiff names the first field in which a coordinator's RoundCommitted
// differs from the aggregator's own ("" if none).
func commitDiff(own, got ledger.RoundCommitted) string {
	switch {
	case got.ModelDigest != own.ModelDigest:
		return fmt.Sprintf("model %s, this aggregator produced %s", got.ModelDigest, own.ModelDigest)
	case got.Strategy != own.Strategy:
		return fmt.Sprintf("strategy %q, the recipe says %q", got.Strategy, own.Strategy)
	case !maps.Equal(got.Params, own.Params):
		return fmt.Sprintf("params %v, the recipe gives %v", got.Params, own.Params)
	case !slices.Equal(got.Contributors, own.Contributors):
		return fmt.Sprintf("contributors %v, the aggregation gives %v", got.Contributors, own.Contributors)
	}
	return ""
}
