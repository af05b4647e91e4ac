package coordinator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator/round"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/clock"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
)

// Job states reported by Status.
const (
	JobIdle    = "idle"    // no job launched yet
	JobWaiting = "waiting" // no round open: too few trainers
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
	// JobCancelled: stopped by CancelJob (fedtune round cancel).
	JobCancelled = "cancelled"
)

// challengeTTL is how long a join challenge stays valid.
const challengeTTL = time.Minute

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// CoordinatorKey signs RoundOpened, JobRegistered and ModelRegistered.
	// Required.
	CoordinatorKey ed25519.PrivateKey
	// Aggregator runs aggregations and signs UpdateRejected,
	// RoundCommitted and RoundFailed: round.NewLocal in this process,
	// or a RemoteAggregator. Required.
	Aggregator Aggregator
	// Ledger is the ledger (NewNodeLedger over a client of any node).
	// Required.
	Ledger Ledger
	// Store holds models and updates (served by artifact.Server). Required.
	Store *artifact.Store
	// Dir keeps the active job file and aggregation scratch files. Required.
	Dir string
	// Logger receives the service's logs (nil: discard).
	Logger *slog.Logger
	// Clock is the service's time (nil: clock.Real): ticks, retry delays,
	// challenge and session ages, deadlines.
	Clock clock.Clock
	// TickInterval is how often the round machine is ticked (0: 1s).
	TickInterval time.Duration
	// MemberRefresh is how often joined trainers' membership is re-read
	// from the ledger (0: 5s).
	MemberRefresh time.Duration
	// Insecure says the gRPC server is plain text (no TLS, no peer
	// identities): callers of ProveSample are then not checked.
	Insecure bool
	// EvalDataRoot is the folder a job's eval.data path is read from
	// (evaldata.go); empty, eval.data must be a blob's digest.
	EvalDataRoot string
	// Metrics counts spot checks (nil: NewMetrics(nil)).
	Metrics *Metrics
}

// Service is the coordinator process's gRPC surface (the
// fedtune.coordinator.v1 calls) and its driver around Machine: it turns
// those calls, clock ticks, ledger outcomes, aggregation results and
// spot-check verdicts into the machine's events, under one lock, and
// carries out each Ready through its parts: the job store (jobstore.go),
// the tx queue (txqueue.go), the trainers' sessions (sessions.go), the
// proof relay (proverelay.go), the evaluator and its scorer (evaluator.go,
// scorer.go) and the artifact guard (artifactguard.go), each with its own
// small lock or none. Create it with NewService, Register it on a gRPC
// server beside artifact.Server, and Run it.
type Service struct {
	coordinatorv1.UnimplementedCoordinatorServer

	cfg   ServiceConfig
	log   *slog.Logger
	clock clock.Clock
	id    string // coordinator key ID
	agg   Aggregator

	jobs       *jobStore // the active job's files; preparing a job (jobstore.go)
	challenges challengeTable
	sessions   sessionTable
	txq        *txQueue
	prove      proveRelay     // proof questions relayed to trainers (service_prove.go)
	ev         *evaluator     // held-out evaluation of committed models (evaluator.go)
	score      *scorer        // runs an evaluation, scores its contributors (scorer.go)
	guard      *artifactGuard // the artifact service's access policy (artifactguard.go)
	running    chan struct{}  // closed once Run has set runCtx

	// mu guards the driver state: the running job and its machine. Holding
	// it, the driver calls only the parts above, which never call back.
	mu     sync.Mutex
	runCtx context.Context // Run's context: async work started by the driver lives as long
	job    *runningJob
	gen    uint64 // job generation: events and txs of an older job are dropped
	// evalTxs counts, by job generation, the RoundEvaluated queued and not
	// yet committed or refused: the job is not done while its current
	// generation has one (recordEvaluation).
	evalTxs map[uint64]int

	stMu   sync.Mutex
	status *coordinatorv1.StatusResponse // last job's live view (rounds from the ledger)

	// onPublish, if set before Run, sees each new live view (s.mu held;
	// it must not call the service). Tests wait on it instead of sleeping.
	onPublish func(*coordinatorv1.StatusResponse)
}

// modelFiles are the digests of a model's config.json, tokenizer file and
// tokenizer_config.json (its chat template; "" when it has none).
type modelFiles struct {
	config          string
	tokenizer       string
	tokenizerConfig string
}

// NewService checks cfg and returns a service.
func NewService(cfg ServiceConfig) (*Service, error) {
	switch {
	case len(cfg.CoordinatorKey) != ed25519.PrivateKeySize:
		return nil, errors.New("coordinator service: CoordinatorKey is required")
	case cfg.Aggregator == nil:
		return nil, errors.New("coordinator service: Aggregator is required")
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
	if cfg.Clock == nil {
		cfg.Clock = clock.Real
	}
	if cfg.Metrics == nil {
		cfg.Metrics, _ = NewMetrics(nil)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "work"), 0o755); err != nil {
		return nil, fmt.Errorf("coordinator service: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		cfg: cfg, log: log, clock: cfg.Clock,
		id:      ledger.KeyID(cfg.CoordinatorKey.Public().(ed25519.PublicKey)),
		agg:     cfg.Aggregator,
		txq:     newTxQueue(),
		running: make(chan struct{}),
	}
	s.guard = &artifactGuard{insecure: cfg.Insecure, id: s.id, ledger: cfg.Ledger, store: cfg.Store, clock: cfg.Clock}
	s.score = &scorer{store: cfg.Store, rounds: cfg.Ledger, work: filepath.Join(cfg.Dir, "work"), dataRoot: cfg.EvalDataRoot,
		author: s.guard.updateAuthor, log: log}
	s.jobs = &jobStore{dir: cfg.Dir, store: cfg.Store, ledger: cfg.Ledger, key: cfg.CoordinatorKey, id: s.id, aggID: s.agg.ID(), log: log}
	s.ev = &evaluator{dir: cfg.Dir, log: log, clock: cfg.Clock, run: func(ctx context.Context, t evalTask) (model.EvalResult, error) {
		res, body, err := s.score.evaluate(ctx, t)
		s.recordEvaluation(body)
		return res, err
	}, done: func(context.Context) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.publishStatus()
	}}
	if err := s.ev.load(); err != nil {
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
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.txq.run(ctx, txWorker{clock: s.clock, log: s.log, current: s.current, submit: s.submitTx, report: s.txReport})
	}()
	defer wg.Wait()
	defer s.ev.wait()
	if err := s.resume(ctx); err != nil {
		s.log.ErrorContext(ctx, "cannot resume the active job", "err", err)
	}
	close(s.running)
	tick := s.clock.NewTicker(s.cfg.TickInterval)
	defer tick.Stop()
	refresh := s.clock.NewTicker(s.cfg.MemberRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			s.sessions.closeAll()
			return nil
		case <-tick.C():
			// The clock's time, not the tick's: a tick may have waited
			// (a ticker holds one), and a fake clock may have jumped.
			s.mu.Lock()
			s.step(Tick{Now: s.clock.Now()})
			s.mu.Unlock()
		case <-refresh.C():
			s.refreshMembers(ctx)
		}
	}
}

// lock waits until Run has started, then takes s.mu; the caller unlocks.
func (s *Service) lock(ctx context.Context) error {
	select {
	case <-s.running:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	return nil
}

// current reports whether gen is the running job's generation.
func (s *Service) current(gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return gen == s.gen
}

// step feeds ev to the running job's machine and carries out the Ready
// (s.mu held).
func (s *Service) step(ev Event) {
	j := s.job
	if j == nil || j.m.Done() || j.result != nil {
		return
	}
	rd, err := j.m.Step(ev)
	if err != nil {
		if errors.Is(err, ErrStaleRound) || errors.Is(err, ErrJobDone) {
			s.log.Debug("event ignored", "err", err)
		} else {
			s.log.Warn("event refused by the round machine", "err", err)
		}
		return
	}
	s.carry(j, rd)
}

// carry does what a Ready asks (s.mu held).
func (s *Service) carry(j *runningJob, rd Ready) {
	for _, tx := range rd.Txs {
		s.txq.push(s.gen, tx)
	}
	for _, t := range rd.Tasks {
		s.sendTask(j, t)
	}
	if a := rd.Aggregation; a != nil {
		go s.aggregate(s.runCtx, s.gen, j, *a)
	}
	if n := rd.ReadSuspensions; n != 0 {
		go s.readSuspensions(s.runCtx, s.gen, j, n, j.height)
	}
	if rd.Waiting != "" {
		s.log.Info("waiting", "job", j.job.Name, "why", rd.Waiting)
		j.detail = rd.Waiting
	}
	if e := rd.Ended; e != nil {
		s.tellEnded(j, e)
	}
	if d := rd.Done; d != nil {
		j.result = d
		if j.ended != nil {
			close(j.ended)
			j.ended = nil
		}
		if d.Cancelled {
			s.cfg.Metrics.Cancelled.Inc()
			s.log.Info("job cancelled", "job", j.job.Name, "committed", d.Committed, "failed", d.Failed, "why", d.Err)
			j.detail = d.Err
		} else if d.Err != "" {
			s.log.Error("job stopped", "job", j.job.Name, "committed", d.Committed, "failed", d.Failed, "err", d.Err)
			j.detail = d.Err
		} else {
			s.log.Info("job done", "job", j.job.Name, "committed", d.Committed, "failed", d.Failed, "model", d.Model)
			j.detail = fmt.Sprintf("%d rounds committed, %d failed", d.Committed, d.Failed)
		}
		if err := s.jobs.markDone(d.Model); err != nil {
			s.log.Error("cannot mark the job done", "err", err)
		}
	}
	s.publishStatus()
}

// sendTask hands a task to the trainer's session, if any. A trainer that
// is not connected gets it again when it rejoins (the machine resends).
func (s *Service) sendTask(j *runningJob, t TrainTask) {
	task, err := j.taskProto(t)
	if err != nil {
		s.log.Error("cannot build task", "trainer", abbrev(t.Trainer), "err", err)
		return
	}
	switch found, sent := s.sessions.sendTask(t.Trainer, task); {
	case sent:
		s.log.Info("task sent", "job", t.JobID, "round", t.Round, "trainer", abbrev(t.Trainer))
	case found:
		s.log.Warn("task queue full; dropped", "trainer", abbrev(t.Trainer))
	}
}

// submitTx signs a queued tx with the key of its role: the coordinator's
// own, or the aggregator's.
func (s *Service) submitTx(ctx context.Context, body ledger.TxBody) (uint64, error) {
	if ledger.TxRoles[body.TxType()] == ledger.RoleCoordinator {
		return s.cfg.Ledger.Submit(ctx, s.cfg.CoordinatorKey, body)
	}
	return s.agg.Submit(ctx, body)
}

// txReport turns a tx queue outcome into the machine's event (TxCommitted,
// TxRejected), a recovery from the ledger, or the status detail.
func (s *Service) txReport(ctx context.Context, r txReport) {
	if ev, ok := r.body.(ledger.RoundEvaluated); ok {
		// An evaluation is no step of the round machine: its fate is
		// logged (a rejection included: the round's outcome stands).
		switch r.fate {
		case txConflict, txRejected:
			s.log.WarnContext(ctx, "RoundEvaluated refused by the ledger", "job", ev.JobID, "round", ev.Round, "err", r.err)
		case txCommitted:
			s.log.InfoContext(ctx, "evaluation on the ledger", "job", ev.JobID, "round", ev.Round, "height", r.height, "nll", ev.MeanNLL, "scores", len(ev.Scores))
		default:
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.evalTxs[r.gen] > 0 {
			s.evalTxs[r.gen]--
		}
		s.publishStatus()
		return
	}
	if r.fate == txConflict && !s.cancelling(r.gen) {
		s.reload(ctx, r.gen)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.job
	switch {
	case j == nil:
	case r.fate == txResumed:
		// Clear the waiting detail unless something newer replaced it.
		if j.detail == r.detail {
			j.detail = ""
			s.publishStatus()
		}
	case r.gen != s.gen:
	case r.fate == txWaiting:
		if j.result == nil {
			j.detail = r.detail
			s.publishStatus()
		}
	case r.fate == txCommitted:
		j.height = max(j.height, r.height)
		if ur, ok := r.body.(ledger.UpdateRejected); ok && strings.HasPrefix(ur.Reason, round.UnverifiedPrefix) {
			s.cfg.Metrics.Unverified.Inc()
		}
		if rc, ok := r.body.(ledger.RoundCommitted); ok && j.job.Name == rc.JobID {
			s.ev.add(s.runCtx, j, rc.Round, rc.ModelDigest)
		}
		if sc, ok := r.body.(ledger.SubmissionsClosed); ok && j.job.Name == sc.JobID {
			go s.watchVerdicts(s.runCtx, s.gen, j, sc.Round, r.height)
		}
		s.step(TxCommitted{Type: r.body.TxType(), Round: roundOfTx(r.body)})
	case r.fate == txRejected || r.fate == txConflict: // a conflict here: while cancelling
		s.step(TxRejected{Type: r.body.TxType(), Round: roundOfTx(r.body), Reason: r.err.Error()})
	}
}

// cancelling reports whether the job of generation gen awaits its
// JobCancelled: a conflict then is a rejection, not a history to reload.
func (s *Service) cancelling(gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.job != nil && gen == s.gen && s.job.m.Cancelling()
}

// reload rebuilds the running job of generation gen from the ledger's
// rounds, once the ledger shows at least the rounds the machine knows.
func (s *Service) reload(ctx context.Context, gen uint64) {
	s.mu.Lock()
	j, cur := s.job, s.gen
	var need uint64
	if j != nil {
		need = j.m.Round()
	}
	s.mu.Unlock()
	if j == nil || gen != cur {
		return
	}
	var history []ledger.Round
	for try := 0; ; try++ {
		h, err := ledgerRounds(ctx, s.cfg.Ledger, j.job.Name)
		if err == nil {
			history = h
			if uint64(len(h)) >= need || try >= 50 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(100 * time.Millisecond):
		}
	}
	nj, err := s.jobs.prepare(ctx, j.job, history)
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return
	}
	if err != nil {
		s.log.ErrorContext(ctx, "cannot recover the job from the ledger", "job", j.job.Name, "err", err)
		j.result = &JobResult{Committed: -1, Err: "recover: " + err.Error()}
		j.detail = j.result.Err
		s.publishStatus()
		return
	}
	nj.launcher = j.launcher
	s.start(nj)
}

// refreshMembers re-reads the membership of the trainers that joined, so a
// trainer removed by an admin leaves the pool.
func (s *Service) refreshMembers(ctx context.Context) {
	var gone []string
	for _, id := range s.sessions.memberList() {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := s.cfg.Ledger.Member(qctx, id)
		cancel()
		if err != nil && !errors.Is(err, ledger.ErrRecordNotFound) {
			return // ledger unreachable: keep what we know
		}
		if err != nil || !m.Active || m.Role != ledger.RoleTrainer {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return
	}
	for _, id := range gone {
		s.sessions.drop(id)
		s.log.WarnContext(ctx, "trainer is no longer a member", "trainer", abbrev(id))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.step(MembersChanged{Trainers: s.sessions.memberList()})
}

// start makes j the running job and feeds it the trainers already joined
// (s.mu held).
func (s *Service) start(j *runningJob) {
	s.gen++
	s.job = j
	s.log.Info("job started", "job", j.job.Name, "rounds", j.job.Rounds, "base", j.base, "recovered_round", j.m.Round())
	s.step(MembersChanged{Trainers: s.sessions.memberList()})
	for _, ev := range s.sessions.streaming() {
		s.step(ev)
	}
	s.step(JobStarted{Now: s.clock.Now()})
	if n := j.m.Round(); j.m.Verifying(n) {
		// Recovered into a round whose submissions are closed.
		go s.watchVerdicts(s.runCtx, s.gen, j, n, 0)
	}
	s.publishStatus()
}

// resume restarts the unfinished job recorded in Dir, if any.
func (s *Service) resume(ctx context.Context) error {
	job, err := s.jobs.loadActive()
	if job == nil || err != nil {
		return err
	}
	var history []ledger.Round
	for {
		if history, err = ledgerRounds(ctx, s.cfg.Ledger, job.Name); err == nil {
			break
		}
		s.log.WarnContext(ctx, "ledger unreachable; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.clock.After(time.Second):
		}
	}
	if rec, err := s.cfg.Ledger.Job(ctx, job.Name); err == nil && rec.Cancelled != nil {
		// Cancelled before the coordinator could mark it done.
		s.log.InfoContext(ctx, "the unfinished job was cancelled; not resuming it", "job", job.Name, "height", rec.Cancelled.Height, "why", rec.Cancelled.Reason)
		return s.jobs.markDone("")
	}
	j, err := s.jobs.prepare(ctx, job, history)
	if err != nil {
		return err
	}
	j.launcher = s.jobs.loadLauncher()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start(j)
	s.ev.addMissed(ctx, j, history)
	return nil
}

// recordEvaluation queues body, a RoundEvaluated the scorer made, on the
// tx queue (signed with the coordinator's key) while its job is the
// running one, and counts it against the job's generation until the
// ledger's answer (evalTxs).
func (s *Service) recordEvaluation(body *ledger.RoundEvaluated) {
	if body == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.job == nil || s.job.job.Name != body.JobID {
		return
	}
	if s.evalTxs == nil {
		s.evalTxs = map[uint64]int{}
	}
	s.evalTxs[s.gen]++
	s.txq.push(s.gen, *body)
}

// unavailable is the status of a call that gave up waiting for the driver.
func unavailable(err error) error { return status.FromContextError(err).Err() }
