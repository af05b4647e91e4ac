package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator/round"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Job states reported by Status.
const (
	JobIdle    = "idle"    // no job launched yet
	JobWaiting = "waiting" // no round open: too few trainers
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// activeJobFile and doneMarker live in ServiceConfig.Dir: the job being run
// (its YAML and source path), and a marker written when it finished, so a
// restarted coordinator resumes exactly the unfinished job.
const (
	activeJobFile = "job.yaml"
	activeSrcFile = "job.source"
	doneMarker    = "job.done"
)

// challengeTTL is how long a join challenge stays valid.
const challengeTTL = time.Minute

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// CoordinatorKey signs RoundOpened and ModelRegistered. Required.
	CoordinatorKey ed25519.PrivateKey
	// Aggregator runs aggregations and signs UpdateRejected,
	// RoundCommitted and RoundFailed. When nil, AggregatorKey is required
	// and the aggregation runs in-process (round.Local over Store).
	Aggregator    Aggregator
	AggregatorKey ed25519.PrivateKey
	// Ledger is a client of any ledger node. Required.
	Ledger *client.Client
	// Store holds models and updates (served by artifact.Server). Required.
	Store *artifact.Store
	// Dir keeps the active job file and aggregation scratch files. Required.
	Dir string
	// Logger receives the service's logs (nil: discard).
	Logger *slog.Logger
	// TickInterval is how often the round machine is ticked (0: 1s).
	TickInterval time.Duration
	// MemberRefresh is how often joined trainers' membership is re-read
	// from the ledger (0: 5s).
	MemberRefresh time.Duration
	// Insecure says the gRPC server is plain text (no TLS, no peer
	// identities): callers of ProveSample are then not checked.
	Insecure bool
	// EvalDataRoot is the folder a job's eval.data path is read from
	// (service_eval.go); empty, eval.data must be a blob's digest.
	EvalDataRoot string
}

// Service is the coordinator process's driver around Machine: the
// fedtune.coordinator.v1 gRPC service, the ledger transactions, the tasks
// to trainers and the aggregation through its Aggregator (in-process over
// the artifact store, or a standalone aggregator).
// Create it with NewService, Register it on a gRPC server beside
// artifact.Server, and Run it.
type Service struct {
	coordinatorv1.UnimplementedCoordinatorServer

	cfg   ServiceConfig
	log   *slog.Logger
	id    string // coordinator key ID
	coord *client.Signer
	agg   Aggregator

	events chan func()

	challenges challengeTable

	txMu    sync.Mutex
	txQueue []queuedTx
	txWake  chan struct{}

	// Owned by the Run goroutine.
	runCtx   context.Context // Run's context: async work started by the loop lives as long
	job      *runningJob
	gen      atomic.Uint64 // job generation: events and txs of an older job are dropped
	sessions map[string]*session
	members  map[string]bool       // active trainer members known from joins
	models   map[string]modelFiles // weight digest → companion files

	stMu   sync.Mutex
	status *coordinatorv1.StatusResponse // last job's live view (rounds from the ledger)

	prove proveRelay // proof questions relayed to trainers (service_prove.go)

	ev evaluator // held-out evaluation of committed models (service_eval.go)

	authors authorCache // update authors, for the download policy (service_upload.go)
}

// queuedTx is a transaction waiting for the tx worker.
type queuedTx struct {
	gen  uint64
	body ledger.TxBody
}

type session struct {
	id       string
	trainer  string
	datasets []string
	tasks    chan *coordinatorv1.Task
	proofs   chan *coordinatorv1.Task // proof questions, apart from tasks (service_prove.go)
	active   bool                     // a Tasks stream is open
	done     chan struct{}
	created  time.Time // when Join made it
}

// modelFiles are the digests of a model's config.json and tokenizer file.
type modelFiles struct {
	config    string
	tokenizer string
}

// NewService checks cfg and returns a service.
func NewService(cfg ServiceConfig) (*Service, error) {
	switch {
	case len(cfg.CoordinatorKey) != ed25519.PrivateKeySize:
		return nil, errors.New("coordinator service: CoordinatorKey is required")
	case cfg.Aggregator == nil && len(cfg.AggregatorKey) != ed25519.PrivateKeySize:
		return nil, errors.New("coordinator service: AggregatorKey (or Aggregator) is required")
	case cfg.Ledger == nil:
		return nil, errors.New("coordinator service: Ledger is required")
	case cfg.Store == nil:
		return nil, errors.New("coordinator service: Store is required")
	case cfg.Dir == "":
		return nil, errors.New("coordinator service: Dir is required")
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = time.Second
	}
	if cfg.MemberRefresh <= 0 {
		cfg.MemberRefresh = 5 * time.Second
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "work"), 0o755); err != nil {
		return nil, fmt.Errorf("coordinator service: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		cfg: cfg, log: log,
		id:       ledger.KeyID(cfg.CoordinatorKey.Public().(ed25519.PublicKey)),
		coord:    client.NewSigner(cfg.Ledger, cfg.CoordinatorKey),
		agg:      cfg.Aggregator,
		events:   make(chan func(), 256),
		txWake:   make(chan struct{}, 1),
		sessions: map[string]*session{},
		members:  map[string]bool{},
		models:   map[string]modelFiles{},
	}
	if s.agg == nil {
		s.agg = round.NewLocal(cfg.Store, filepath.Join(cfg.Dir, "work"), client.NewSigner(cfg.Ledger, cfg.AggregatorKey), log)
	}
	if err := s.loadEvals(); err != nil {
		return nil, fmt.Errorf("coordinator service: %w", err)
	}
	return s, nil
}

// ID returns the coordinator's ledger key ID.
func (s *Service) ID() string { return s.id }

// Register adds the Coordinator service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) { coordinatorv1.RegisterCoordinatorServer(r, s) }

// Run drives jobs until ctx ends: it resumes an unfinished job found in
// Dir (coordinator.Recover from the ledger's round records), ticks the
// machine, submits its transactions and runs its aggregations. It returns
// nil once ctx is done.
func (s *Service) Run(ctx context.Context) error {
	s.runCtx = ctx
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.txWorker(ctx) }()
	defer wg.Wait()
	defer s.ev.wg.Wait()
	if err := s.resume(ctx); err != nil {
		s.log.ErrorContext(ctx, "cannot resume the active job", "err", err)
	}
	tick := time.NewTicker(s.cfg.TickInterval)
	defer tick.Stop()
	refresh := time.NewTicker(s.cfg.MemberRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, ss := range s.sessions {
				close(ss.done)
			}
			s.sessions = map[string]*session{}
			return nil
		case f := <-s.events:
			f()
		case now := <-tick.C:
			s.step(ctx, Tick{Now: now})
		case <-refresh.C:
			s.refreshMembers(ctx)
		}
	}
}

// do runs f on the Run goroutine and waits for it.
func (s *Service) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case s.events <- func() { f(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// post queues f for the Run goroutine without waiting.
func (s *Service) post(ctx context.Context, f func()) {
	select {
	case s.events <- f:
	case <-ctx.Done():
	}
}

// step feeds ev to the running job's machine and carries out the Ready.
func (s *Service) step(ctx context.Context, ev Event) {
	j := s.job
	if j == nil || j.m.Done() || j.result != nil {
		return
	}
	rd, err := j.m.Step(ev)
	if err != nil {
		if errors.Is(err, ErrStaleRound) || errors.Is(err, ErrJobDone) {
			s.log.DebugContext(ctx, "event ignored", "err", err)
		} else {
			s.log.WarnContext(ctx, "event refused by the round machine", "err", err)
		}
		return
	}
	s.carry(ctx, j, rd)
}

// carry does what a Ready asks.
func (s *Service) carry(ctx context.Context, j *runningJob, rd Ready) {
	for _, tx := range rd.Txs {
		s.enqueueTx(tx)
	}
	for _, t := range rd.Tasks {
		s.sendTask(ctx, j, t)
	}
	if a := rd.Aggregation; a != nil {
		go s.aggregate(s.runCtx, s.gen.Load(), j, *a)
	}
	if rd.Waiting != "" {
		s.log.InfoContext(ctx, "waiting", "job", j.job.Name, "why", rd.Waiting)
		j.detail = rd.Waiting
	}
	if d := rd.Done; d != nil {
		j.result = d
		if d.Err != "" {
			s.log.ErrorContext(ctx, "job stopped", "job", j.job.Name, "committed", d.Committed, "failed", d.Failed, "err", d.Err)
			j.detail = d.Err
		} else {
			s.log.InfoContext(ctx, "job done", "job", j.job.Name, "committed", d.Committed, "failed", d.Failed, "model", d.Model)
			j.detail = fmt.Sprintf("%d rounds committed, %d failed", d.Committed, d.Failed)
		}
		if err := writeFileAtomic(filepath.Join(s.cfg.Dir, doneMarker), []byte(d.Model+"\n")); err != nil {
			s.log.ErrorContext(ctx, "cannot mark the job done", "err", err)
		}
	}
	s.publishStatus(ctx)
}

// sendTask hands a task to the trainer's open session, if any. A trainer
// that is not connected gets it again when it rejoins (the machine resends).
func (s *Service) sendTask(ctx context.Context, j *runningJob, t TrainTask) {
	task, err := j.taskProto(t)
	if err != nil {
		s.log.ErrorContext(ctx, "cannot build task", "trainer", abbrev(t.Trainer), "err", err)
		return
	}
	for _, ss := range s.sessions {
		if ss.trainer != t.Trainer {
			continue
		}
		select {
		case ss.tasks <- task:
			s.log.InfoContext(ctx, "task sent", "job", t.JobID, "round", t.Round, "trainer", abbrev(t.Trainer))
		default:
			s.log.WarnContext(ctx, "task queue full; dropped", "trainer", abbrev(t.Trainer))
		}
		return
	}
}

// enqueueTx queues a transaction for the worker, in order.
func (s *Service) enqueueTx(body ledger.TxBody) {
	s.txMu.Lock()
	s.txQueue = append(s.txQueue, queuedTx{gen: s.gen.Load(), body: body})
	s.txMu.Unlock()
	select {
	case s.txWake <- struct{}{}:
	default:
	}
}

// txWorker submits queued transactions one at a time, in order, and
// reports each outcome to the machine.
//
// A tx whose fate is unknown because its signer's ledger connection (or the
// remote aggregator that signs it) is unreachable is retried, first after
// txRetryMin and then backing off to txRetryMax, for as long as it takes:
// the round cannot close without it, and the ledger deduplicates. While it
// waits, the job's status detail says what it waits for.
func (s *Service) txWorker(ctx context.Context) {
	delay := txRetryMin
	var failingSince time.Time
	var waitDetail string // the status detail the last failure set
	for {
		s.txMu.Lock()
		var q *queuedTx
		if len(s.txQueue) > 0 {
			q = &s.txQueue[0]
			s.txQueue = s.txQueue[1:]
		}
		s.txMu.Unlock()
		if q == nil {
			select {
			case <-ctx.Done():
				return
			case <-s.txWake:
			}
			continue
		}
		if q.gen != s.gen.Load() {
			continue // the job was reloaded or replaced
		}
		submit := s.agg.Submit
		if ledger.TxRoles[q.body.TxType()] == ledger.RoleCoordinator {
			submit = s.coord.Submit
		}
		round := roundOfTx(q.body)
		h, err := submit(ctx, q.body)
		if ctx.Err() != nil {
			return
		}
		if err == nil || errors.Is(err, client.ErrRejected) {
			if !failingSince.IsZero() {
				s.log.InfoContext(ctx, "tx submitted after retries", "type", q.body.TxType(), "round", round, "waited", time.Since(failingSince).Round(time.Second))
				// Clear the waiting detail unless something newer replaced it.
				stale := waitDetail
				s.post(ctx, func() {
					if j := s.job; j != nil && j.detail == stale {
						j.detail = ""
						s.publishStatus(ctx)
					}
				})
			}
			delay, failingSince, waitDetail = txRetryMin, time.Time{}, ""
		}
		var ev Event
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "tx committed", "type", q.body.TxType(), "round", round, "height", h)
			ev = TxCommitted{Type: q.body.TxType(), Round: round}
			if rc, ok := q.body.(ledger.RoundCommitted); ok {
				s.postEval(ctx, q.gen, rc)
			}
		case errors.Is(err, client.ErrRejected) && historyConflict(err):
			// The ledger already holds this round's record: an earlier
			// run of this coordinator got further than the history it
			// recovered from showed. Recover again from the ledger.
			s.log.WarnContext(ctx, "the ledger is ahead of the job; recovering from it", "type", q.body.TxType(), "round", round, "err", err)
			gen := q.gen
			s.post(ctx, func() {
				if gen == s.gen.Load() {
					s.reload(ctx)
				}
			})
			continue
		case errors.Is(err, client.ErrRejected):
			s.log.WarnContext(ctx, "tx rejected", "type", q.body.TxType(), "round", round, "err", err)
			ev = TxRejected{Type: q.body.TxType(), Round: round, Reason: err.Error()}
		default:
			// Fate unknown and the ledger unreachable: try again later
			// (the ledger deduplicates; the nonce is re-read).
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			s.log.WarnContext(ctx, "tx not submitted; retrying", "type", q.body.TxType(), "round", round, "retry_in", delay, "err", err)
			detail := fmt.Sprintf("round %d: %s not submitted since %s (retrying every %s): %v",
				round, q.body.TxType(), failingSince.UTC().Format(time.RFC3339), delay, err)
			waitDetail = detail
			gen := q.gen
			s.post(ctx, func() {
				if j := s.job; j != nil && gen == s.gen.Load() && j.result == nil {
					j.detail = detail
					s.publishStatus(ctx)
				}
			})
			s.txMu.Lock()
			s.txQueue = append([]queuedTx{*q}, s.txQueue...)
			s.txMu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, txRetryMax)
			continue
		}
		gen := q.gen
		s.post(ctx, func() {
			if gen == s.gen.Load() {
				s.step(ctx, ev)
			}
		})
	}
}

// Bounds of the retry delay for a tx whose fate is unknown.
const (
	txRetryMin = time.Second
	txRetryMax = 30 * time.Second
)

// historyConflict reports whether a rejection says the ledger already
// holds the record the tx would write (another run of this job wrote it).
func historyConflict(err error) bool {
	return errors.Is(err, ledger.ErrAlreadyExists) || errors.Is(err, ledger.ErrRoundNotOpen)
}

// reload rebuilds the running job from the ledger's rounds (Run goroutine).
func (s *Service) reload(ctx context.Context) {
	j := s.job
	if j == nil {
		return
	}
	var history []ledger.Round
	for try := 0; ; try++ {
		h, err := s.cfg.Ledger.Rounds(ctx, j.job.Name)
		if err == nil {
			history = h
			if uint64(len(h)) >= j.m.Round() || try >= 50 {
				break
			}
		}
		if ctx.Err() != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	nj, err := s.prepare(ctx, j.job, history)
	if err != nil {
		s.log.ErrorContext(ctx, "cannot recover the job from the ledger", "job", j.job.Name, "err", err)
		j.result = &JobResult{Committed: -1, Err: "recover: " + err.Error()}
		j.detail = j.result.Err
		s.publishStatus(ctx)
		return
	}
	s.start(ctx, nj)
}

func roundOfTx(b ledger.TxBody) uint64 {
	switch b := b.(type) {
	case ledger.RoundOpened:
		return b.Round
	case ledger.UpdateRejected:
		return b.Round
	case ledger.RoundCommitted:
		return b.Round
	case ledger.RoundFailed:
		return b.Round
	}
	return 0
}

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
	evicted, err := s.challenges.issue(string(c), caller, time.Now(), challengeTTL)
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
	if !s.challenges.take(string(req.Challenge), time.Now()) {
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
		for wait := time.Now().Add(5 * time.Second); errors.Is(err, ledger.ErrRecordNotFound) && time.Now().Before(wait); {
			time.Sleep(50 * time.Millisecond)
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
	var sid string
	var capErr error
	err = s.do(ctx, func() {
		if capErr = s.capSessions(id, time.Now()); capErr != nil {
			return
		}
		var b [16]byte
		_, _ = rand.Read(b[:])
		sid = hex.EncodeToString(b[:])
		s.sessions[sid] = &session{id: sid, trainer: id, datasets: datasets, tasks: make(chan *coordinatorv1.Task, 16),
			proofs: make(chan *coordinatorv1.Task, maxProofsPerTrainer), done: make(chan struct{}), created: time.Now()}
		s.members[id] = true
	})
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if capErr != nil {
		s.log.WarnContext(ctx, "join refused", "trainer", abbrev(id), "err", capErr)
		return nil, capErr
	}
	s.log.InfoContext(ctx, "trainer joined", "trainer", abbrev(id), "datasets", len(datasets))
	return &coordinatorv1.JoinResponse{Session: sid, TrainerId: id}, nil
}

// Tasks implements coordinatorv1.CoordinatorServer.
func (s *Service) Tasks(req *coordinatorv1.TasksRequest, stream coordinatorv1.Coordinator_TasksServer) error {
	ctx := stream.Context()
	var ss *session
	err := s.do(ctx, func() {
		ss = s.sessions[req.Session]
		if ss == nil || ss.active {
			ss = nil
			return
		}
		if peer, err := tlsid.PeerID(ctx); err == nil && peer != ss.trainer {
			ss = nil
			return
		}
		// A newer session of the same trainer replaces older ones.
		for id, o := range s.sessions {
			if o != ss && o.trainer == ss.trainer {
				close(o.done)
				delete(s.sessions, id)
			}
		}
		ss.active = true
		s.trainerJoined(s.runCtx, ss)
	})
	if err != nil {
		return status.FromContextError(err).Err()
	}
	if ss == nil {
		return status.Error(codes.FailedPrecondition, "tasks: unknown or already streaming session; join again")
	}
	defer s.post(context.WithoutCancel(ctx), func() {
		if cur := s.sessions[ss.id]; cur == ss {
			delete(s.sessions, ss.id)
			s.log.InfoContext(ctx, "trainer left", "trainer", abbrev(ss.trainer))
			s.step(ctx, TrainerLeft{Trainer: ss.trainer})
			s.publishStatus(ctx)
		}
	})
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

// trainerJoined tells the running machine about a joined trainer.
func (s *Service) trainerJoined(ctx context.Context, ss *session) {
	if s.job == nil {
		return
	}
	s.step(ctx, MembersChanged{Trainers: s.memberList()})
	s.step(ctx, TrainerJoined{Trainer: ss.trainer, Datasets: ss.datasets})
	s.publishStatus(ctx)
}

func (s *Service) memberList() []string {
	var out []string
	for id, ok := range s.members {
		if ok {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// refreshMembers re-reads the membership of the trainers that joined, so a
// trainer removed by an admin leaves the pool.
func (s *Service) refreshMembers(ctx context.Context) {
	ids := s.memberList()
	if len(ids) == 0 {
		return
	}
	changed := false
	for _, id := range ids {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := s.cfg.Ledger.Member(qctx, id)
		cancel()
		if err != nil && !errors.Is(err, ledger.ErrRecordNotFound) {
			return // ledger unreachable: keep what we know
		}
		if err != nil || !m.Active || m.Role != ledger.RoleTrainer {
			delete(s.members, id)
			changed = true
			for sid, ss := range s.sessions {
				if ss.trainer == id {
					close(ss.done)
					delete(s.sessions, sid)
				}
			}
			s.log.WarnContext(ctx, "trainer is no longer a member", "trainer", abbrev(id))
		}
	}
	if changed && s.job != nil {
		s.step(ctx, MembersChanged{Trainers: s.memberList()})
	}
}

// SubmitUpdate implements coordinatorv1.CoordinatorServer.
func (s *Service) SubmitUpdate(ctx context.Context, req *coordinatorv1.SubmitUpdateRequest) (*coordinatorv1.SubmitUpdateResponse, error) {
	var trainer, jobName string
	if err := s.do(ctx, func() {
		if ss := s.sessions[req.Session]; ss != nil {
			trainer = ss.trainer
		}
		if s.job != nil {
			jobName = s.job.job.Name
		}
	}); err != nil {
		return nil, status.FromContextError(err).Err()
	}
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
		// UpdateSubmitted states it.
		// The node we read may apply the trainer's block a moment after the
		// node the trainer submitted through: wait a little for it.
		var u *ledger.Update
		for wait := time.Now().Add(10 * time.Second); ; {
			r, err := s.cfg.Ledger.Round(ctx, req.JobId, req.Round)
			if err != nil {
				return nil, status.Errorf(codes.FailedPrecondition, "submit update: %v", err)
			}
			for i := range r.Updates {
				if r.Updates[i].Trainer == trainer {
					u = &r.Updates[i]
				}
			}
			if u != nil || time.Now().After(wait) {
				break
			}
			select {
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		switch {
		case u == nil:
			return nil, status.Errorf(codes.FailedPrecondition, "submit update: the ledger has no UpdateSubmitted of %s in job %s round %d; submit it first", abbrev(trainer), req.JobId, req.Round)
		case u.UpdateDigest != d:
			return nil, status.Errorf(codes.InvalidArgument, "submit update: the ledger records update %s, not %s", u.UpdateDigest, d)
		}
		ev = UpdateArrived{Round: req.Round, Trainer: trainer, Digest: d, Dataset: u.DatasetDigest, Samples: u.Samples, Metrics: u.Metrics}
	}
	var stepErr error
	if err := s.do(ctx, func() {
		if s.job == nil || s.job.job.Name != req.JobId {
			stepErr = fmt.Errorf("job %q is not running", req.JobId)
			return
		}
		rd, err := s.job.m.Step(ev)
		if err != nil {
			stepErr = err
			return
		}
		s.log.InfoContext(ctx, "update arrived", "round", req.Round, "trainer", abbrev(trainer), "error", req.Error)
		s.carry(s.runCtx, s.job, rd)
	}); err != nil {
		return nil, status.FromContextError(err).Err()
	}
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
	if err := s.checkEvalData(ctx, job); errors.Is(err, errEvalDataUnchecked) {
		return nil, status.Errorf(codes.Unavailable, "launch: %v", err)
	} else if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "launch: %v", err)
	}
	var busy string
	if err := s.do(ctx, func() {
		if s.job != nil && !s.job.m.Done() {
			busy = s.job.job.Name
		}
	}); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if busy != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "launch: job %s is still running; one job runs at a time", busy)
	}
	rounds, err := s.cfg.Ledger.Rounds(ctx, job.Name)
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
	if rec, err := s.cfg.Ledger.Job(ctx, job.Name); err == nil && rec.Owner != s.coord.ID() {
		return nil, status.Errorf(codes.AlreadyExists, "launch: job %s is registered on the ledger by coordinator %s (height %d), not by this coordinator %s; job IDs belong to the coordinator that registers them first: rename the job (name: in the job file)",
			job.Name, rec.Owner, rec.Height, s.coord.ID())
	} else if err != nil && !errors.Is(err, ledger.ErrRecordNotFound) {
		return nil, status.Errorf(codes.Unavailable, "launch: %v", err)
	}
	j, err := s.prepare(ctx, job, nil)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "launch: %v", err)
	}
	if err := s.saveActive(req.JobYaml, req.Source); err != nil {
		return nil, status.Errorf(codes.Internal, "launch: %v", err)
	}
	if err := s.do(ctx, func() { s.start(s.runCtx, j) }); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	return &coordinatorv1.LaunchJobResponse{JobId: job.Name, ConfigDigest: job.Digest(), BaseModel: j.base}, nil
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

// start makes j the running job and feeds it the trainers already joined.
func (s *Service) start(ctx context.Context, j *runningJob) {
	s.gen.Add(1)
	s.job = j
	s.log.InfoContext(ctx, "job started", "job", j.job.Name, "rounds", j.job.Rounds, "base", j.base, "recovered_round", j.m.Round())
	s.step(ctx, MembersChanged{Trainers: s.memberList()})
	for _, ss := range s.sessions {
		if ss.active {
			s.step(ctx, TrainerJoined{Trainer: ss.trainer, Datasets: ss.datasets})
		}
	}
	s.step(ctx, JobStarted{Now: time.Now()})
	s.publishStatus(ctx)
}

// resume restarts the unfinished job recorded in Dir, if any.
func (s *Service) resume(ctx context.Context) error {
	data, err := os.ReadFile(filepath.Join(s.cfg.Dir, activeJobFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(s.cfg.Dir, doneMarker)); err == nil {
		return nil
	}
	src, _ := os.ReadFile(filepath.Join(s.cfg.Dir, activeSrcFile))
	job, err := ParseJob(string(src), data)
	if err != nil {
		return err
	}
	job.Source = string(src)
	var history []ledger.Round
	for {
		if history, err = s.cfg.Ledger.Rounds(ctx, job.Name); err == nil {
			break
		}
		s.log.WarnContext(ctx, "ledger unreachable; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	j, err := s.prepare(ctx, job, history)
	if err != nil {
		return err
	}
	s.start(ctx, j)
	s.queueMissedEvals(j, history)
	return nil
}

func (s *Service) saveActive(yaml []byte, source string) error {
	_ = os.Remove(filepath.Join(s.cfg.Dir, doneMarker))
	if err := writeFileAtomic(filepath.Join(s.cfg.Dir, activeSrcFile), []byte(source)); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.cfg.Dir, activeJobFile), yaml)
}

// Status implements coordinatorv1.CoordinatorServer.
func (s *Service) Status(ctx context.Context, req *coordinatorv1.StatusRequest) (*coordinatorv1.StatusResponse, error) {
	s.stMu.Lock()
	cur := s.status
	s.stMu.Unlock()
	jobID := req.JobId
	if cur == nil && jobID == "" {
		// No job yet: say who is connected.
		idle := &coordinatorv1.StatusResponse{State: JobIdle}
		if err := s.do(ctx, func() { idle.Joined = s.joinedList() }); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		return idle, nil
	}
	resp := &coordinatorv1.StatusResponse{JobId: jobID}
	if cur != nil && (jobID == "" || jobID == cur.JobId) {
		resp = cloneStatus(cur)
	}
	rounds, err := s.cfg.Ledger.Rounds(ctx, resp.JobId)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "status: %v", err)
	}
	if len(rounds) == 0 && (cur == nil || cur.JobId != resp.JobId) {
		return nil, status.Errorf(codes.NotFound, "status: the ledger holds no rounds of job %s", resp.JobId)
	}
	if resp.State == "" {
		resp.State = "recorded"
	}
	lagging := false
	for _, r := range rounds {
		resp.Rounds = append(resp.Rounds, roundProto(r))
		if r.Status == ledger.StatusCommitted {
			resp.Model = r.ModelDigest
		}
		lagging = lagging || r.Status == ledger.StatusOpen
	}
	s.fillEval(resp)
	// The machine learns a round's fate from the ledger leader; the node
	// this status reads from may not have applied that block yet. Do not
	// call a job finished until its record here is.
	if resp.State == JobDone && len(rounds) < int(resp.RoundsTotal) {
		lagging = true
	}
	if (resp.State == JobDone || resp.State == JobFailed) && lagging {
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

// publishStatus refreshes the live view Status serves (Run goroutine).
func (s *Service) publishStatus(context.Context) {
	j := s.job
	if j == nil {
		return
	}
	st := &coordinatorv1.StatusResponse{JobId: j.job.Name, RoundsTotal: int32(j.job.Rounds), BaseModel: j.base,
		Detail: j.detail, Mode: j.job.FineTune.Mode}
	switch {
	case j.result != nil && j.result.Err != "":
		st.State = JobFailed
	case j.result != nil:
		st.State = JobDone
	case j.m.st == stWaiting:
		st.State = JobWaiting
	default:
		st.State = JobRunning
	}
	if r := s.evalPending(j.job.Name); r > 0 && st.State == JobDone {
		// Done once the final model's evaluation is in the status.
		st.State, st.Detail = JobRunning, strings.TrimPrefix(fmt.Sprintf("%s; evaluating round %d's model", st.Detail, r), "; ")
	}
	st.Joined = s.joinedList()
	s.stMu.Lock()
	s.status = st
	s.stMu.Unlock()
}

// joinedList returns the trainers with an open task stream, sorted (Run
// goroutine).
func (s *Service) joinedList() []string {
	var out []string
	for _, ss := range s.sessions {
		if ss.active {
			out = append(out, ss.trainer)
		}
	}
	slices.Sort(out)
	return out
}

// writeFileAtomic writes data to path through a synced temporary file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
