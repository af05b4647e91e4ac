package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/fedtune/fedtune/aggregator/round"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Server is a whole aggregator process: the Aggregator service on one
// gRPC server, a local artifact store, a ledger client and a client of the
// coordinator's artifact service.
type Server struct {
	cfg       Config
	log       *slog.Logger
	id        string
	ln        net.Listener
	svc       *Service
	store     *artifact.Store
	ledger    *client.Client
	artifacts *artifact.Client
	options   []grpc.ServerOption
}

// NewServer loads the key, opens the store, dials the ledger and the
// coordinator and listens (on ln when given, else on cfg.Listen).
func NewServer(ctx context.Context, cfg Config, ln net.Listener, log *slog.Logger) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := ledger.LoadKey(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, id: ledger.KeyID(key.Public().(ed25519.PublicKey))}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.store, err = artifact.OpenStore(filepath.Join(cfg.DataDir, "artifacts")); err != nil {
		return nil, err
	}
	pin, err := client.LoadPin(cfg.LedgerGenesis, cfg.LedgerNodeIDs...)
	if err != nil {
		return nil, fmt.Errorf("%w: ledger_genesis: %w", ErrConfig, err)
	}
	if pin == nil {
		log.Warn(client.UnpinnedWarning, "ledger", cfg.Ledger)
	}
	if s.ledger, err = client.DialPinned(ctx, cfg.Ledger, key, pin); err != nil {
		return nil, err
	}
	dial := tlsid.InsecureDialOption()
	if cfg.Insecure {
		s.options = []grpc.ServerOption{tlsid.InsecureServerOption()}
	} else {
		o, err := tlsid.ServerOption(key, tlsid.ExpectID(cfg.CoordinatorID))
		if err != nil {
			return nil, err
		}
		s.options = []grpc.ServerOption{o}
		if dial, err = tlsid.DialOption(key, tlsid.ExpectID(cfg.CoordinatorID)); err != nil {
			return nil, err
		}
	}
	if s.artifacts, err = artifact.Dial(cfg.Coordinator, dial); err != nil {
		return nil, err
	}
	local := round.NewLocal(s.store, filepath.Join(cfg.DataDir, "work"), client.NewSigner(s.ledger, key), log)
	if local.Backend, err = kernels.Open(cfg.Backend); err != nil {
		return nil, fmt.Errorf("%w: backend: %w", ErrConfig, err)
	}
	log.Info("aggregation backend", "backend", local.Backend.Name())
	s.svc = NewService(local, s.store, s.artifacts, s.ledger, cfg.CoordinatorID, log)
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
		}
	}
	s.ln = ln
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// ID returns the aggregator's ledger key ID.
func (s *Server) ID() string { return s.id }

// Store returns the aggregator's local artifact store.
func (s *Server) Store() *artifact.Store { return s.store }

func (s *Server) close() {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.artifacts != nil {
		s.artifacts.Close()
	}
	if s.ledger != nil {
		s.ledger.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}

// Run serves until ctx ends, then stops gracefully and closes everything.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	gs := grpc.NewServer(s.options...)
	s.svc.Register(gs)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(s.ln) }()
	s.log.InfoContext(ctx, "aggregator listening", "addr", s.Addr(), "id", s.id, "coordinator", s.cfg.Coordinator, "tls", !s.cfg.Insecure)
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		gs.Stop()
	}
	if errors.Is(runErr, grpc.ErrServerStopped) {
		runErr = nil
	}
	return runErr
}
