package aggsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	aggregatorv1 "github.com/fedtune/fedtune/api/aggregator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/node"
)

// Service implements aggregatorv1.AggregatorServer over a local store,
// the coordinator's artifact service and a ledger signer.
type Service struct {
	aggregatorv1.UnimplementedAggregatorServer

	local       *coordinator.LocalAggregator
	store       *artifact.Store
	artifacts   *artifact.Client
	coordinator string // allowed peer ID ("" over plain text)
	log         *slog.Logger
}

// NewService returns a service that fetches from and uploads to
// artifacts, aggregates and signs through local, and admits only the peer
// coordinatorID when the link has TLS identities.
func NewService(local *coordinator.LocalAggregator, store *artifact.Store, artifacts *artifact.Client, coordinatorID string, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{local: local, store: store, artifacts: artifacts, coordinator: coordinatorID, log: log}
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
	a, global := coordinator.AggregationTaskFromProto(req)
	if len(a.Inputs) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "aggregate job %s round %d: no inputs", a.JobID, a.Round)
	}
	log := s.log.With("job", a.JobID, "round", a.Round)
	need := []string{}
	for _, in := range a.Inputs {
		need = append(need, in.Digest)
	}
	for _, d := range []string{global, a.State} {
		if d != "" {
			need = append(need, d)
		}
	}
	for _, d := range need {
		if _, err := s.artifacts.Fetch(ctx, d, s.store); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "aggregate job %s round %d: fetch %s: %v", a.JobID, a.Round, d, err)
		}
	}
	log.InfoContext(ctx, "inputs fetched", "blobs", len(need))
	done, err := s.local.Aggregate(ctx, a, global)
	if err != nil {
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
	body, err := coordinator.DecodeAggregatorTx(req.Type, req.Body)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "submit: %v", err)
	}
	// Sign a commit only of a model this aggregator holds: one it
	// produced (and uploaded), never one it is merely told about.
	if rc, ok := body.(ledger.RoundCommitted); ok {
		if has, err := s.store.Has(rc.ModelDigest); err != nil || !has {
			return nil, status.Errorf(codes.FailedPrecondition,
				"submit: RoundCommitted of job %s round %d names model %s, which this aggregator did not produce", rc.JobID, rc.Round, rc.ModelDigest)
		}
	}
	h, err := s.local.Submit(ctx, body)
	switch {
	case errors.Is(err, node.ErrRejected):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "submit: %v", err)
	}
	s.log.InfoContext(ctx, "tx committed", "type", req.Type, "height", h)
	return &aggregatorv1.SubmitTxResponse{Height: h}, nil
}
