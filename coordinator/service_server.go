package coordinator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/fedtune/fedtune/aggregator/round"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is a whole coordinator process: the Coordinator service (with the
// aggregator running in-process, or a remote one when the config names
// it) and the artifact service over one store, on one gRPC server.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	ln      net.Listener
	svc     *Service
	store   *artifact.Store
	ledger  *client.Client
	remote  *RemoteAggregator // nil: the aggregator runs in-process
	options []grpc.ServerOption

	reg       *prometheus.Registry // the coordinator's and the artifact service's metrics
	artMet    *artifact.Metrics
	metricsLn net.Listener // nil: no /metrics endpoint
}

// NewServer loads the keys, opens the store, dials the ledger and listens
// (on ln when given, else on cfg.Listen).
func NewServer(ctx context.Context, cfg ServerConfig, ln net.Listener, log *slog.Logger) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ck, err := ledger.LoadKey(cfg.CoordinatorKey)
	if err != nil {
		return nil, fmt.Errorf("coordinator_key: %w", err)
	}
	var ak ed25519.PrivateKey
	if cfg.Aggregator == nil {
		if ak, err = ledger.LoadKey(cfg.AggregatorKey); err != nil {
			return nil, fmt.Errorf("aggregator_key: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	met, err := NewMetrics(s.reg)
	if err != nil {
		return nil, err
	}
	if s.artMet, err = artifact.NewMetrics(s.reg); err != nil {
		return nil, err
	}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.store, err = artifact.OpenStore(filepath.Join(cfg.DataDir, "artifacts")); err != nil {
		return nil, err
	}
	pin, err := client.LoadPin(cfg.LedgerGenesis, cfg.LedgerNodeIDs...)
	if err != nil {
		return nil, fmt.Errorf("%w: ledger_genesis: %w", ErrServerConfig, err)
	}
	if pin == nil {
		log.Warn(client.UnpinnedWarning, "ledger", cfg.Ledger)
	}
	if s.ledger, err = client.DialPinned(ctx, cfg.Ledger, ck, pin); err != nil {
		return nil, err
	}
	var agg Aggregator
	if a := cfg.Aggregator; a != nil {
		opt := tlsid.InsecureDialOption()
		if !cfg.Insecure {
			if opt, err = tlsid.DialOption(ck, AggregatorVerifier(s.ledger, a.ID)); err != nil {
				return nil, err
			}
		}
		if s.remote, err = DialAggregator(a.Address, a.ID, opt); err != nil {
			return nil, err
		}
		agg = s.remote
	}
	dir := filepath.Join(cfg.DataDir, "state")
	if agg == nil {
		work := filepath.Join(dir, "work")
		if err := os.MkdirAll(work, 0o755); err != nil {
			return nil, err
		}
		agg = round.NewLocal(s.store, work, client.NewSigner(s.ledger, ak), log)
	}
	if s.svc, err = NewService(ServiceConfig{CoordinatorKey: ck, Aggregator: agg, Ledger: NewNodeLedger(s.ledger), Store: s.store,
		Dir: dir, Logger: log, TickInterval: cfg.Tick, Insecure: cfg.Insecure,
		EvalDataRoot: cfg.EvalDataRoot, Metrics: met}); err != nil {
		return nil, err
	}
	// Any key may connect; Join then checks the ledger's membership.
	if s.options, err = tlsid.ServerOptions(cfg.Insecure, ck, tlsid.AllowAny()); err != nil {
		return nil, err
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
		}
	}
	s.ln = ln
	if cfg.MetricsAddress != "" {
		if s.metricsLn, err = net.Listen("tcp", cfg.MetricsAddress); err != nil {
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
	}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// MetricsAddr returns the /metrics listener's address, or "" when off.
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// Service returns the coordinator service.
func (s *Server) Service() *Service { return s.svc }

// Store returns the artifact store.
func (s *Server) Store() *artifact.Store { return s.store }

func (s *Server) close() {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.metricsLn != nil {
		s.metricsLn.Close()
	}
	if s.remote != nil {
		s.remote.Close()
	}
	if s.ledger != nil {
		s.ledger.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}

// Run serves until ctx ends, then stops gracefully and closes everything.
// With cfg.Job set and no job to resume, it launches that job first.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	lim := s.cfg.Artifacts.withDefaults()
	as, err := artifact.NewServer(artifact.ServerConfig{Store: s.store, Logger: s.log,
		MaxBlobSize: lim.MaxBlobSize, MemberQuota: lim.MemberQuota, MemberInFlight: lim.MemberInFlight,
		IdleTimeout: lim.IdleTimeout, PruneAfter: lim.PruneAfter, Metrics: s.artMet,
		AuthorizeUpload: s.svc.guard.mayUpload, AuthorizeDownload: s.svc.guard.mayDownload})
	if err != nil {
		return err
	}
	gs := grpc.NewServer(append(artifact.ServerOptions(), s.options...)...)
	as.Register(gs)
	s.svc.Register(gs)
	serving := tlsid.Serve(gs, s.ln)
	errc := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- s.svc.Run(rctx) }()
	go func() { defer wg.Done(); as.Maintain(rctx) }() // prunes abandoned partial uploads
	if s.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := msrv.Serve(s.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.ErrorContext(ctx, "metrics endpoint stopped", "err", err)
			}
		}()
		go func() { defer wg.Done(); <-rctx.Done(); _ = msrv.Close() }()
		s.log.InfoContext(ctx, "metrics endpoint", "addr", s.MetricsAddr())
	}
	s.log.InfoContext(ctx, "coordinator listening", "addr", s.Addr(), "id", s.svc.ID(), "tls", !s.cfg.Insecure)
	if s.cfg.Job != "" {
		if err := s.launchConfigured(ctx); err != nil {
			s.log.ErrorContext(ctx, "cannot launch the configured job", "job", s.cfg.Job, "err", err)
		}
	}
	err = serving.Until(ctx, errc, cancel)
	wg.Wait()
	return err
}

// launchConfigured launches cfg.Job unless a job is already active.
func (s *Server) launchConfigured(ctx context.Context) error {
	if s.svc.jobs.hasActive() {
		return nil // resuming (or finished) a job: leave it
	}
	data, err := os.ReadFile(s.cfg.Job)
	if err != nil {
		return err
	}
	_, err = s.svc.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: data, Source: s.cfg.Job})
	return err
}
