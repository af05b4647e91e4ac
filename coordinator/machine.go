package coordinator

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/aggregator/round"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

// Sentinel errors returned by Machine.Step (the machine is unchanged).
var (
	// ErrUnexpectedEvent: the event does not fit the machine's state.
	ErrUnexpectedEvent = errors.New("coordinator: unexpected event")
	// ErrStaleRound: an update or result for a round that is not collecting.
	ErrStaleRound = errors.New("coordinator: stale round")
	// ErrNotSelected: an update from a trainer the round did not select.
	ErrNotSelected = errors.New("coordinator: trainer not selected")
	// ErrBadEvent: an event with malformed fields.
	ErrBadEvent = errors.New("coordinator: malformed event")
	// ErrJobDone: the job has finished; no event applies any more.
	ErrJobDone = errors.New("coordinator: job done")
	// ErrHistory: Recover found a ledger history this job cannot continue.
	ErrHistory = errors.New("coordinator: history does not fit the job")
)

// MaxOpenAttempts is how many times in a row the ledger may reject a
// round's RoundOpened before the job stops.
const MaxOpenAttempts = 3

// MaxCloseAttempts is how many times the ledger may refuse a round's
// SubmissionsClosed (a job with verify) before the round fails. The
// machine closes at its own clock's deadline, the ledger judges by the
// block time: a leader's clock behind the coordinator's may refuse a
// close the next tick's retry passes.
const MaxCloseAttempts = 3

// ParamServerState is the RoundCommitted parameter naming the digest of the
// server optimizer state (FedAvgM, FedOpt) the round produced.
const ParamServerState = "server_state"

// Event is an input of Machine.Step. The machine reads no clock: time
// arrives in JobStarted and Tick.
type Event interface{ isEvent() }

// JobStarted starts the job at Now. Send it once, also to a machine made
// by Recover.
type JobStarted struct{ Now time.Time }

// Tick tells the machine the time; deadlines are checked against it. Tick
// at least at Ready.Wake, and regularly (rounds open with deadlines
// counted from the latest time known).
type Tick struct{ Now time.Time }

// MembersChanged gives the ledger's current active members with role
// trainer. Joined trainers that are no longer members leave.
type MembersChanged struct{ Trainers []string }

// TrainerJoined: a member answered the join challenge; Datasets are the
// digests of the datasets it registered on the ledger.
type TrainerJoined struct {
	Trainer  string
	Datasets []string
}

// TrainerLeft: a trainer disconnected.
type TrainerLeft struct{ Trainer string }

// UpdateArrived: a selected trainer's UpdateSubmitted is on the ledger and
// its update artifact is stored.
type UpdateArrived struct {
	Round   uint64
	Trainer string
	Digest  string // update digest
	Dataset string // dataset manifest digest
	Samples uint64
	Metrics map[string]float64
	// DatasetName and Licence are the dataset's name and licence as the
	// ledger records them (the service reads them), checked against the
	// recipe's licences.
	DatasetName, Licence string
}

// UpdateInvalid: a selected trainer's update cannot be used (its artifact
// failed to arrive or to verify, or the trainer reported failure).
type UpdateInvalid struct {
	Round   uint64
	Trainer string
	Reason  string
}

// AggregationDone reports the result of the round's aggregation task: every
// input is in exactly one of Weights (its share in the new model) and
// Rejected (the reason). Its fields are round.Result's, so a result
// converts to it.
type AggregationDone struct {
	Round    uint64
	Model    string // new model digest
	State    string // new server state digest, "" for stateless strategies
	Weights  map[string]float64
	Rejected map[string]string
}

// AggregationFailed reports that the round's aggregation produced nothing.
type AggregationFailed struct {
	Round  uint64
	Reason string
}

// DrawFixed gives the spot-check draw of a round whose submissions the
// machine closed (ledger.SubmissionsClosed): the trainers whose updates
// the ledger shows drawn (ledger.Update.Drawn). Only a job with verify.
type DrawFixed struct {
	Round uint64
	Drawn []string
}

// UpdateVerdict is a verifier's verdict on a drawn update as the ledger
// recorded it: Passed (UpdateVerified), or rejected (the verifier's
// UpdateRejected, its reason in Reason).
type UpdateVerdict struct {
	Round   uint64
	Trainer string
	Passed  bool
	Reason  string
}

// SuspensionsRead gives the trainers the ledger shows suspended from the
// job (its Suspensions query: each with the last round it may not take
// part in), read for round Round after Ready.ReadSuspensions asked. Only a
// job with verify: its machine opens a round only with a read made for
// that round, so that what it selects follows the ledger, not its own
// memory (a rejection that landed after its round failed, or while the
// coordinator was down, included).
type SuspensionsRead struct {
	Round     uint64
	Suspended []ledger.Suspension
}

// TxCommitted: the ledger applied a transaction of Ready.Txs.
type TxCommitted struct {
	Type  string // ledger.TypeRoundOpened, …
	Round uint64
}

// TxRejected: the ledger refused a transaction of Ready.Txs.
type TxRejected struct {
	Type   string
	Round  uint64
	Reason string
}

func (JobStarted) isEvent()        {}
func (Tick) isEvent()              {}
func (MembersChanged) isEvent()    {}
func (TrainerJoined) isEvent()     {}
func (TrainerLeft) isEvent()       {}
func (UpdateArrived) isEvent()     {}
func (UpdateInvalid) isEvent()     {}
func (AggregationDone) isEvent()   {}
func (AggregationFailed) isEvent() {}
func (DrawFixed) isEvent()         {}
func (UpdateVerdict) isEvent()     {}
func (SuspensionsRead) isEvent()   {}
func (TxCommitted) isEvent()       {}
func (TxRejected) isEvent()        {}

// Ready is what the driver must do after a Step, in this order: submit
// Txs to the ledger in order (RoundOpened signed by the coordinator key,
// the others by the aggregator key, see ledger.TxRoles) and report each
// outcome with TxCommitted or TxRejected; send the Tasks; run the
// Aggregation and report AggregationDone or AggregationFailed.
type Ready struct {
	Txs         []ledger.TxBody
	Tasks       []TrainTask
	Aggregation *round.Task
	// Wake, when set, is the time the machine next needs a Tick (a new
	// round deadline).
	Wake time.Time
	// Waiting, when set, says why no round can open (said once per reason).
	Waiting string
	// Done is set once, when the job has finished.
	Done *JobResult
	// ReadSuspensions, when set, asks for the job's suspensions as the
	// ledger shows them now, reported with SuspensionsRead for this
	// round (a job with verify, before each attempt to open a round).
	ReadSuspensions uint64
	// Ended, when set, names the trainers to tell that a round ended
	// before they submitted (the job was cancelled).
	Ended *RoundEnd
}

// Empty reports whether r asks for nothing.
func (r Ready) Empty() bool {
	return len(r.Txs) == 0 && len(r.Tasks) == 0 && r.Aggregation == nil && r.Wake.IsZero() && r.Waiting == "" && r.Done == nil &&
		r.ReadSuspensions == 0 && r.Ended == nil
}

// TrainTask tells one trainer to train in a round (Flower's FitIns).
type TrainTask struct {
	Trainer      string
	JobID        string
	Round        uint64
	ConfigDigest string
	BaseModel    string // digest of the model to start from
	Deadline     time.Time
	// Seed is the trainer's seed for this round: the first 8 bytes
	// (big-endian) of SHA-256("fedtune/task-seed/v1" ‖ job seed ‖ round ‖ trainer ID).
	Seed        uint64
	Datasets    []string // admitted manifests; empty: any registered
	Train       TrainSpec
	FineTune    FineTuneSpec
	Compression CompressionSpec
}

// JobResult is the outcome of a finished job.
type JobResult struct {
	Committed int
	Failed    int
	Model     string // the last committed model (the base if none)
	// Err is set when the job stopped before its last round.
	Err string
	// Cancelled is set when a Cancel stopped the job (its JobCancelled is
	// on the ledger); CancelledRound is the open round it failed (0: none).
	Cancelled      bool
	CancelledRound uint64
}

// Config configures a Machine.
type Config struct {
	// Job is the validated job.
	Job *Job
	// BaseModel is the digest of round 1's base model; it may be empty when
	// Job.Model.Digest is set, and must equal it otherwise.
	BaseModel string
	// Recipe is the job's round recipe as registered on the ledger; its
	// commits carry Recipe.CommitParams. Zero: Job.Recipe without
	// aggregators or initial adapter.
	Recipe ledger.RoundRecipe
}

type state int

const (
	stWaiting     state = iota // to open m.round
	stOpening                  // RoundOpened submitted
	stCollecting               // round open, collecting updates
	stAggregating              // aggregation task out
	stClosing                  // RoundCommitted / RoundFailed submitted
	stClosingSubs              // SubmissionsClosed submitted (a job with verify)
	stVerifying                // submissions closed: awaiting the draw and verdicts
	stCancelling               // JobCancelled submitted (Cancel)
	stDone
)

type update struct {
	round.Input
	invalid string // reason, when rejected
}

type roundState struct {
	selected []string
	deadline time.Time
	updates  map[string]*update // by trainer: arrived updates
	failed   map[string]string  // trainers that failed without an update
	left     map[string]bool    // selected trainers not joined now
	tasked   map[string]bool    // selected trainers sent a task since they joined
	inputs   []round.Input      // of the running aggregation
	closing  ledger.TxBody      // RoundCommitted or RoundFailed awaiting confirmation
	model    string             // new model of a pending commit
	srvState string             // new server state of a pending commit

	// Spot checks (a job with verify): the valid updates when the
	// submissions closed, the draw once known, the verdicts by trainer
	// ("" passed, else the rejection's reason), and the time to stop
	// waiting for them.
	checked   []round.Input
	drawKnown bool
	drawn     map[string]bool
	verdicts  map[string]string
	verifyBy  time.Time
	// closeRefused counts the ledger's refusals of the round's
	// SubmissionsClosed; closeHold holds the next try until a tick.
	closeRefused int
	closeHold    bool
}

// Machine is the coordinator's round lifecycle for one job as a pure state
// machine (events in, actions out, in the style of etcd-raft): it does no
// I/O and reads no clock. Not safe for concurrent use.
type Machine struct {
	job       *Job
	jobDigest string
	strategy  aggregator.Strategy
	recipe    ledger.RoundRecipe
	pool      *Pool

	started   bool
	now       time.Time
	holdOpen  bool // a RoundOpened was rejected: retry at the next Tick
	attempts  int  // RoundOpened rejections in a row
	st        state
	round     uint64 // the round being opened, collected or closed
	base      string
	srvState  string
	committed int
	failed    int
	cur       *roundState
	// suspended maps a trainer a verifier rejected to the last round it
	// may not be selected for, as the ledger showed it in the read made
	// for round suspRead (SuspensionsRead); suspAsked is the round a read
	// was last asked for. The ledger refuses a RoundOpened that selects a
	// suspended trainer.
	suspended map[string]uint64
	suspRead  uint64
	suspAsked uint64
	waiting   string
	wake      time.Time
	// cancelReason is the reason of the Cancel being carried out.
	cancelReason string

	rd Ready // accumulated during a Step
}

// New returns a machine at the start of cfg.Job.
func New(cfg Config) (*Machine, error) {
	j := cfg.Job
	if j == nil {
		return nil, fmt.Errorf("%w: no job", ErrJob)
	}
	if err := j.Validate(); err != nil {
		return nil, err
	}
	base := cfg.BaseModel
	switch {
	case base == "":
		base = j.Model.Digest
	case j.Model.Digest != "" && base != j.Model.Digest:
		return nil, fmt.Errorf("%w: base model %s differs from model.digest %s", ErrJob, base, j.Model.Digest)
	}
	if !digest.Valid(base) {
		return nil, fmt.Errorf("%w: base model digest %q is not a SHA-256 digest", ErrJob, base)
	}
	s, err := j.NewStrategy()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJob, err)
	}
	rc := cfg.Recipe
	if rc.Strategy == "" {
		if rc, err = j.Recipe(nil, ""); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrJob, err)
		}
	}
	if rc.Strategy != s.Name() {
		return nil, fmt.Errorf("%w: the recipe's strategy %q is not the job's %q", ErrJob, rc.Strategy, s.Name())
	}
	if rc.BaseModel != "" && rc.BaseModel != base {
		return nil, fmt.Errorf("%w: the recipe's base model %s is not the job's %s", ErrJob, rc.BaseModel, base)
	}
	return &Machine{job: j, jobDigest: j.Digest(), strategy: s, recipe: rc, pool: NewPool(), st: stWaiting, round: 1, base: base}, nil
}

// Job returns the machine's job.
func (m *Machine) Job() *Job { return m.job }

// Round returns the number of the round being opened, collected or closed
// (the next round while waiting).
func (m *Machine) Round() uint64 { return m.round }

// Base returns the current global model digest.
func (m *Machine) Base() string { return m.base }

// Pool returns the machine's trainer pool (read it; change it only through
// events).
func (m *Machine) Pool() *Pool { return m.pool }

// Verifying reports whether round n has closed its submissions (or is
// closing them) and awaits its spot-check draw and verdicts.
func (m *Machine) Verifying(n uint64) bool {
	return n == m.round && (m.st == stClosingSubs || m.st == stVerifying)
}

// Done reports whether the job has finished.
func (m *Machine) Done() bool { return m.st == stDone }

// Step applies one event and returns what to do. An event that does not
// fit (a stale round, an unselected trainer, a malformed field) returns an
// error wrapping one of the sentinels and changes nothing.
func (m *Machine) Step(ev Event) (Ready, error) {
	if m.st == stDone {
		return Ready{}, fmt.Errorf("%T: %w", ev, ErrJobDone)
	}
	m.rd = Ready{}
	if m.st == stCancelling {
		if err := m.cancellingEvent(ev); err != nil {
			m.rd = Ready{}
			return Ready{}, err
		}
		rd := m.rd
		m.rd = Ready{}
		return rd, nil
	}
	if err := m.apply(ev); err != nil {
		m.rd = Ready{}
		return Ready{}, err
	}
	m.advance()
	rd := m.rd
	m.rd = Ready{}
	return rd, nil
}

func unexpected(ev Event, format string, args ...any) error {
	return fmt.Errorf("%T: %w: %s", ev, ErrUnexpectedEvent, fmt.Sprintf(format, args...))
}

func malformed(ev Event, format string, args ...any) error {
	return fmt.Errorf("%T: %w: %s", ev, ErrBadEvent, fmt.Sprintf(format, args...))
}

func (m *Machine) apply(ev Event) error {
	switch e := ev.(type) {
	case JobStarted:
		if m.started {
			return unexpected(ev, "the job has already started")
		}
		if e.Now.IsZero() {
			return malformed(ev, "no time")
		}
		m.started = true
		m.setNow(e.Now)
	case Tick:
		if e.Now.IsZero() {
			return malformed(ev, "no time")
		}
		m.setNow(e.Now)
		m.holdOpen = false
		if m.cur != nil {
			m.cur.closeHold = false
		}
	case MembersChanged:
		for _, id := range m.pool.SetMembers(e.Trainers) {
			m.left(id)
		}
	case TrainerJoined:
		if err := m.pool.Join(e.Trainer, e.Datasets); err != nil {
			return fmt.Errorf("%T: %w", ev, err)
		}
		if r := m.cur; r != nil && slices.Contains(r.selected, e.Trainer) {
			delete(r.left, e.Trainer) // advance sends its task if it has none
		}
	case TrainerLeft:
		if m.pool.Leave(e.Trainer) {
			m.left(e.Trainer)
		}
	case UpdateArrived:
		return m.updateArrived(e)
	case Cancel:
		return m.cancel(e)
	case UpdateInvalid:
		if err := m.checkCollecting(ev, e.Round, e.Trainer); err != nil {
			return err
		}
		if e.Reason == "" {
			return malformed(ev, "no reason")
		}
		r := m.cur
		if u := r.updates[e.Trainer]; u != nil {
			// Already delivered and on the ledger: the aggregator's own
			// checks decide about it (it signs no rejection on the
			// coordinator's word).
			return nil
		} else if _, ok := r.failed[e.Trainer]; !ok {
			r.failed[e.Trainer] = e.Reason
		}
	case DrawFixed:
		if m.st != stVerifying || e.Round != m.round {
			return fmt.Errorf("%T round %d: %w", ev, e.Round, ErrStaleRound)
		}
		if m.cur.drawKnown {
			return nil // told again
		}
		m.cur.drawKnown, m.cur.drawn = true, map[string]bool{}
		for _, t := range e.Drawn {
			m.cur.drawn[t] = true
		}
	case UpdateVerdict:
		if m.st != stVerifying || e.Round != m.round {
			return fmt.Errorf("%T round %d: %w", ev, e.Round, ErrStaleRound)
		}
		if !e.Passed && e.Reason == "" {
			return malformed(ev, "a rejection without a reason")
		}
		if _, ok := m.cur.verdicts[e.Trainer]; !ok {
			// A rejection's suspension is the ledger's: the next round
			// reads it (SuspensionsRead) before it opens.
			m.cur.verdicts[e.Trainer] = e.Reason
			if e.Passed {
				m.cur.verdicts[e.Trainer] = ""
			}
		}
	case SuspensionsRead:
		if m.st != stWaiting || e.Round != m.round {
			return fmt.Errorf("%T round %d: %w", ev, e.Round, ErrStaleRound)
		}
		sus := make(map[string]uint64, len(e.Suspended))
		for i, x := range e.Suspended {
			if !digest.Valid(x.Trainer) {
				return malformed(ev, "suspended[%d]: trainer %q is not a member ID", i, x.Trainer)
			}
			sus[x.Trainer] = max(sus[x.Trainer], x.Until)
		}
		m.suspended, m.suspRead = sus, e.Round
	case AggregationDone:
		return m.aggregationDone(e)
	case AggregationFailed:
		if m.st != stAggregating || e.Round != m.round {
			return fmt.Errorf("%T round %d: %w", ev, e.Round, ErrStaleRound)
		}
		if e.Reason == "" {
			return malformed(ev, "no reason")
		}
		m.close(ledger.RoundFailed{JobID: m.job.Name, Round: m.round, Reason: "aggregation failed: " + e.Reason}, "", "")
	case TxCommitted:
		return m.txCommitted(e)
	case TxRejected:
		return m.txRejected(e)
	default:
		return malformed(ev, "unknown event type")
	}
	return nil
}

func (m *Machine) setNow(t time.Time) {
	if t.After(m.now) {
		m.now = t
	}
}

// left marks a selected trainer of the current round as gone.
func (m *Machine) left(id string) {
	if r := m.cur; r != nil && slices.Contains(r.selected, id) {
		r.left[id] = true
		delete(r.tasked, id)
	}
}

// outstanding reports whether selected trainer id has neither an update
// nor a failure in the current round.
func (m *Machine) outstanding(id string) bool {
	_, failed := m.cur.failed[id]
	return m.cur.updates[id] == nil && !failed
}

func (m *Machine) checkCollecting(ev Event, round uint64, trainer string) error {
	if m.st != stCollecting || round != m.round {
		return fmt.Errorf("%T round %d from %s: %w", ev, round, abbrev(trainer), ErrStaleRound)
	}
	// The ledger checks this for every UpdateSubmitted; here it guards
	// UpdateInvalid, which never reaches the ledger (doc.go, Rules).
	if !slices.Contains(m.cur.selected, trainer) {
		return fmt.Errorf("%T round %d: %s: %w", ev, round, abbrev(trainer), ErrNotSelected)
	}
	return nil
}

func (m *Machine) updateArrived(e UpdateArrived) error {
	if err := m.checkCollecting(e, e.Round, e.Trainer); err != nil {
		return err
	}
	switch {
	case !digest.Valid(e.Digest):
		return malformed(e, "update digest %q is not a SHA-256 digest", e.Digest)
	case !digest.Valid(e.Dataset):
		return malformed(e, "dataset digest %q is not a SHA-256 digest", e.Dataset)
	case e.Samples == 0:
		return malformed(e, "no samples")
	}
	r := m.cur
	// One update per trainer is the ledger's rule (doc.go, Rules): a
	// redelivery is a no-op, another digest an invariant broken upstream.
	if u := r.updates[e.Trainer]; u != nil {
		if u.Digest == e.Digest {
			return nil // redelivered
		}
		return unexpected(e, "%s already submitted %s in round %d", abbrev(e.Trainer), abbrev(u.Digest), m.round)
	}
	delete(r.failed, e.Trainer) // it may have failed once, then delivered after all
	u := &update{Input: round.Input{Trainer: e.Trainer, Digest: e.Digest, Dataset: e.Dataset, Samples: e.Samples}}
	r.updates[e.Trainer] = u
	published := slices.ContainsFunc(m.recipe.Published, func(p ledger.PublishedRef) bool { return p.Digest == e.Dataset })
	if ms := m.job.Datasets.Manifests; len(ms) > 0 && !slices.Contains(ms, e.Dataset) && !published {
		u.invalid = fmt.Sprintf("dataset %s is not admitted by job %s", e.Dataset, m.job.Name)
		m.rd.Txs = append(m.rd.Txs, ledger.UpdateRejected{JobID: m.job.Name, Round: m.round, UpdateDigest: e.Digest, Reason: u.invalid})
	} else if !m.recipe.AcceptsLicence(e.Licence) {
		u.invalid = m.recipe.LicenceRefusal(e.Dataset, e.DatasetName, e.Licence)
		m.rd.Txs = append(m.rd.Txs, ledger.UpdateRejected{JobID: m.job.Name, Round: m.round, UpdateDigest: e.Digest, Reason: u.invalid})
	}
	return nil
}

func (m *Machine) aggregationDone(e AggregationDone) error {
	if m.st != stAggregating || e.Round != m.round {
		return fmt.Errorf("%T round %d: %w", e, e.Round, ErrStaleRound)
	}
	if !digest.Valid(e.Model) {
		return malformed(e, "model digest %q is not a SHA-256 digest", e.Model)
	}
	if e.State != "" && !digest.Valid(e.State) {
		return malformed(e, "server state digest %q is not a SHA-256 digest", e.State)
	}
	byTrainer := map[string]round.Input{}
	for _, in := range m.cur.inputs {
		byTrainer[in.Trainer] = in
	}
	for t, w := range e.Weights {
		if _, ok := byTrainer[t]; !ok {
			return malformed(e, "weight for %s, which is not an input", abbrev(t))
		}
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return malformed(e, "weight %v of %s is not a finite non-negative number", w, abbrev(t))
		}
	}
	for t, why := range e.Rejected {
		if _, ok := byTrainer[t]; !ok {
			return malformed(e, "rejection of %s, which is not an input", abbrev(t))
		}
		if _, ok := e.Weights[t]; ok {
			return malformed(e, "%s is both weighted and rejected", abbrev(t))
		}
		if why == "" {
			return malformed(e, "rejection of %s has no reason", abbrev(t))
		}
	}
	if len(e.Weights)+len(e.Rejected) != len(byTrainer) {
		return malformed(e, "%d weighted and %d rejected of %d inputs: every input needs a weight or a rejection", len(e.Weights), len(e.Rejected), len(byTrainer))
	}
	for _, t := range slices.Sorted(maps.Keys(e.Rejected)) {
		m.rd.Txs = append(m.rd.Txs, ledger.UpdateRejected{JobID: m.job.Name, Round: m.round, UpdateDigest: byTrainer[t].Digest, Reason: e.Rejected[t]})
	}
	if n := len(e.Weights); n < m.job.Trainers.Min {
		m.close(ledger.RoundFailed{JobID: m.job.Name, Round: m.round,
			Reason: fmt.Sprintf("only %d updates passed the aggregator's checks; need %d", n, m.job.Trainers.Min)}, "", "")
		return nil
	}
	contrib := make([]ledger.Contribution, 0, len(e.Weights))
	for _, t := range slices.Sorted(maps.Keys(e.Weights)) {
		contrib = append(contrib, ledger.Contribution{Trainer: t, UpdateDigest: byTrainer[t].Digest, Weight: e.Weights[t]})
	}
	params := m.recordParams()
	if e.State != "" {
		params[ParamServerState] = e.State
	}
	m.close(ledger.RoundCommitted{JobID: m.job.Name, Round: m.round, ModelDigest: e.Model,
		Strategy: m.strategy.Name(), Params: params, Contributors: contrib}, e.Model, e.State)
	return nil
}

// recordParams are the parameters a RoundCommitted records: the recipe's
// (ledger.RoundRecipe.CommitParams), without any noise seed.
func (m *Machine) recordParams() map[string]string { return m.recipe.CommitParams() }

// Recipe returns the job's round recipe.
func (m *Machine) Recipe() ledger.RoundRecipe { return m.recipe }

func (m *Machine) close(body ledger.TxBody, model, srvState string) {
	m.cur.closing, m.cur.model, m.cur.srvState = body, model, srvState
	m.rd.Txs = append(m.rd.Txs, body)
	m.st = stClosing
}

func (m *Machine) txCommitted(e TxCommitted) error {
	switch {
	case e.Type == ledger.TypeRoundOpened && m.st == stOpening && e.Round == m.round:
		m.st = stCollecting // advance sends the tasks
		m.attempts = 0
		for _, t := range m.cur.selected {
			if !m.pool.Joined(t) {
				m.cur.left[t] = true
			}
		}
	case e.Type == ledger.TypeSubmissionsClosed && m.st == stClosingSubs && e.Round == m.round:
		m.st = stVerifying
		m.cur.verifyBy = m.now.Add(m.job.VerifyTimeout())
		m.setWake(m.cur.verifyBy)
	case e.Type == ledger.TypeUpdateRejected && e.Round <= m.round:
		// Recorded; nothing follows from it.
	case m.st == stClosing && e.Round == m.round && e.Type == m.cur.closing.TxType():
		m.closeLanded(e.Type)
		m.st = stWaiting
	default:
		return unexpected(e, "%s of round %d is not awaited", e.Type, e.Round)
	}
	return nil
}

func (m *Machine) txRejected(e TxRejected) error {
	reason := e.Reason
	if reason == "" {
		reason = "no reason given"
	}
	switch {
	case e.Type == ledger.TypeRoundOpened && m.st == stOpening && e.Round == m.round:
		m.attempts++
		m.cur = nil
		// The ledger may know a suspension the last read did not (one
		// that landed since): read again before the next attempt.
		m.suspRead, m.suspAsked = 0, 0
		if m.attempts >= MaxOpenAttempts {
			m.finish(fmt.Sprintf("the ledger rejected RoundOpened of round %d %d times, last: %s", m.round, m.attempts, reason))
			return nil
		}
		m.st = stWaiting
		m.holdOpen = true
	case e.Type == ledger.TypeSubmissionsClosed && m.st == stClosingSubs && e.Round == m.round:
		m.cur.closeRefused++
		if m.cur.closeRefused < MaxCloseAttempts {
			// Retry at the next tick: the ledger's block time may not have
			// passed the deadline yet.
			m.st, m.cur.closeHold = stCollecting, true
			m.setWaiting(fmt.Sprintf("round %d: the ledger refused SubmissionsClosed (%d of %d tries: %s); retrying at the next tick", m.round, m.cur.closeRefused, MaxCloseAttempts, reason))
			return nil
		}
		m.close(ledger.RoundFailed{JobID: m.job.Name, Round: m.round, Reason: fmt.Sprintf("the ledger refused SubmissionsClosed %d times, so no spot-check draw; last: %s", m.cur.closeRefused, reason)}, "", "")
	case e.Type == ledger.TypeUpdateRejected && e.Round <= m.round:
		// The update stays out of the aggregation either way.
	case m.st == stClosing && e.Round == m.round && e.Type == m.cur.closing.TxType():
		if e.Type == ledger.TypeRoundCommitted {
			m.close(ledger.RoundFailed{JobID: m.job.Name, Round: m.round, Reason: "the ledger rejected RoundCommitted: " + reason}, "", "")
			return nil
		}
		m.finish(fmt.Sprintf("the ledger rejected RoundFailed of round %d: %s", m.round, reason))
	default:
		return unexpected(e, "%s of round %d is not awaited", e.Type, e.Round)
	}
	return nil
}

func (m *Machine) finish(err string) {
	m.st = stDone
	m.rd.Done = &JobResult{Committed: m.committed, Failed: m.failed, Model: m.base, Err: err}
}

// task sends trainer t the current round's task.
func (m *Machine) task(t string) {
	r := m.cur
	r.tasked[t] = true
	j := m.job
	ft := j.FineTune
	if ft.LoRA != nil {
		l := *ft.LoRA
		l.Targets = slices.Clone(l.Targets)
		ft.LoRA = &l
	}
	m.rd.Tasks = append(m.rd.Tasks, TrainTask{
		Trainer: t, JobID: j.Name, Round: m.round, ConfigDigest: m.jobDigest, BaseModel: m.base,
		Deadline: r.deadline, Seed: TaskSeed(j.Seed, m.round, t), Datasets: slices.Clone(j.Datasets.Manifests),
		Train: j.Train, FineTune: ft, Compression: j.Compression,
	})
}

// TaskSeed derives a trainer's seed for a round (see TrainTask.Seed).
func TaskSeed(seed, round uint64, trainer string) uint64 {
	h := sha256.New()
	h.Write([]byte("fedtune/task-seed/v1"))
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seed)
	binary.BigEndian.PutUint64(b[8:], round)
	h.Write(b[:])
	h.Write([]byte(trainer))
	return binary.BigEndian.Uint64(h.Sum(nil)[:8])
}

// advance takes every step the machine's state allows after an event.
func (m *Machine) advance() {
	if !m.started {
		return
	}
	switch m.st {
	case stWaiting:
		m.open()
	case stCollecting:
		m.checkQuorum()
	case stVerifying:
		m.checkVerified()
	}
}

// SuspendedUntil returns the last round trainer t is kept out of because
// a verifier rejected its update, as the ledger showed it in the machine's
// last SuspensionsRead (0: none).
func (m *Machine) SuspendedUntil(t string) uint64 { return m.suspended[t] }

// needSuspensions reports whether round m.round may not open yet because
// the job (one with verify) has no suspensions read for it; it asks for
// them once per attempt.
func (m *Machine) needSuspensions() bool {
	if m.recipe.Verify == nil || m.suspRead == m.round {
		return false
	}
	if m.suspAsked != m.round {
		m.suspAsked = m.round
		m.rd.ReadSuspensions = m.round
	}
	m.setWaiting(fmt.Sprintf("round %d: reading the job's suspensions from the ledger", m.round))
	return true
}

// closeSubmissions ends the collection of a job with verify: the ledger's
// SubmissionsClosed fixes the draw; the round aggregates once the drawn
// updates have their verdicts (checkVerified).
func (m *Machine) closeSubmissions(valid []round.Input) {
	m.cur.checked = valid
	m.cur.verdicts = map[string]string{}
	m.st = stClosingSubs
	m.rd.Txs = append(m.rd.Txs, ledger.SubmissionsClosed{JobID: m.job.Name, Round: m.round})
}

// checkVerified aggregates the checked updates once every drawn one has
// a verdict, without those a verifier rejected; at the verify timeout a
// drawn update without a verdict is rejected as unverified.
func (m *Machine) checkVerified() {
	r := m.cur
	if r.verifyBy.IsZero() {
		r.verifyBy = m.now.Add(m.job.VerifyTimeout()) // recovered (Recover)
	}
	timedOut := !m.now.Before(r.verifyBy)
	if !r.drawKnown {
		if timedOut {
			m.close(ledger.RoundFailed{JobID: m.job.Name, Round: m.round,
				Reason: fmt.Sprintf("the spot-check draw of round %d could not be read from the ledger by %s", m.round, r.verifyBy.UTC().Format(time.RFC3339))}, "", "")
			return
		}
		m.setWake(r.verifyBy)
		return
	}
	var inputs []round.Input
	var pending []string
	for _, in := range r.checked {
		why, judged := r.verdicts[in.Trainer]
		switch {
		case !r.drawn[in.Trainer]:
			inputs = append(inputs, in)
		case judged && why == "":
			inputs = append(inputs, in)
		case judged:
			// The verifier's UpdateRejected is on the ledger.
		default:
			pending = append(pending, in.Trainer)
		}
	}
	if len(pending) > 0 && !timedOut {
		m.setWaiting(fmt.Sprintf("round %d: awaiting the verdicts of %d drawn updates until %s", m.round, len(pending), r.verifyBy.UTC().Format(time.RFC3339)))
		m.setWake(r.verifyBy)
		return
	}
	for _, t := range pending {
		for _, in := range r.checked {
			if in.Trainer == t {
				m.rd.Txs = append(m.rd.Txs, ledger.UpdateRejected{JobID: m.job.Name, Round: m.round, UpdateDigest: in.Digest,
					Reason: fmt.Sprintf("%s drawn for a spot check, and no verifier's verdict by %s", round.UnverifiedPrefix, r.verifyBy.UTC().Format(time.RFC3339))})
			}
		}
	}
	if need := m.job.Trainers.Min; len(inputs) < need {
		if m.now.Before(r.deadline) {
			// The aggregator signs a RoundFailed only once the ledger
			// shows the deadline passed (see checkQuorum).
			for _, t := range pending {
				r.verdicts[t] = "unverified" // its rejection is out
			}
			m.setWaiting(fmt.Sprintf("round %d: %d updates passed the spot checks of %d checked, need %d; the round fails at its deadline %s",
				m.round, len(inputs), len(r.checked), need, r.deadline.UTC().Format(time.RFC3339)))
			m.setWake(r.deadline)
			return
		}
		m.waiting = ""
		m.close(ledger.RoundFailed{JobID: m.job.Name, Round: m.round,
			Reason: fmt.Sprintf("%d updates passed the spot checks of %d checked; need %d", len(inputs), len(r.checked), need)}, "", "")
		return
	}
	m.waiting = ""
	m.aggregate(inputs)
}

func (m *Machine) setWaiting(why string) {
	if why != m.waiting {
		m.waiting = why
		m.rd.Waiting = why
	}
}

// open opens round m.round if enough trainers are eligible.
func (m *Machine) open() {
	j := m.job
	if m.round > uint64(j.Rounds) {
		m.finish("")
		return
	}
	if m.holdOpen {
		m.setWaiting(fmt.Sprintf("round %d: RoundOpened was rejected; retrying at the next tick", m.round))
		return
	}
	if m.needSuspensions() {
		return
	}
	eligible := m.pool.Eligible(j.Datasets.Manifests)
	if len(m.recipe.Published) > 0 {
		eligible = m.pool.All()
	}
	eligible = slices.DeleteFunc(eligible, func(t string) bool { return m.round <= m.suspended[t] })
	sel := Select(j.Seed, m.round, j.Trainers, eligible)
	if sel == nil {
		m.setWaiting(fmt.Sprintf("round %d: %d eligible trainers joined, need %d", m.round, len(eligible), j.Trainers.Min))
		return
	}
	ranges, err := m.recipe.Ranges(m.round, sel)
	if err != nil {
		m.setWaiting(fmt.Sprintf("round %d: %v", m.round, err))
		return
	}
	m.waiting = ""
	deadline := m.now.Add(j.Deadline)
	m.cur = &roundState{selected: sel, deadline: deadline, updates: map[string]*update{},
		failed: map[string]string{}, left: map[string]bool{}, tasked: map[string]bool{}}
	m.rd.Txs = append(m.rd.Txs, ledger.RoundOpened{JobID: j.Name, Round: m.round, ConfigDigest: m.jobDigest,
		BaseModel: m.base, Strategy: m.strategy.Name(), Trainers: slices.Clone(sel), Deadline: deadline, Ranges: ranges})
	m.st = stOpening
	m.setWake(deadline)
}

func (m *Machine) setWake(t time.Time) {
	if !t.Equal(m.wake) {
		m.wake = t
		m.rd.Wake = t
	}
}

// checkQuorum aggregates or fails the collecting round when it can:
// aggregate once every selected trainer answered (or left) with at least
// min valid updates, or at the deadline with at least min; fail at the
// deadline with fewer, or as soon as every selected trainer answered and
// fewer than min updates are valid.
func (m *Machine) checkQuorum() {
	r := m.cur
	need := m.job.Trainers.Min
	var valid []round.Input
	outstanding, gone, submitted := 0, 0, 0
	for _, t := range r.selected {
		if u := r.updates[t]; u != nil {
			submitted++
			if u.invalid == "" {
				valid = append(valid, u.Input)
			}
			continue
		}
		if _, ok := r.failed[t]; ok {
			continue
		}
		outstanding++
		if r.left[t] {
			gone++
		}
	}
	deadlinePassed := !m.now.Before(r.deadline)
	switch {
	case len(valid) >= need && m.recipe.Verify != nil && r.closeHold:
		m.setWake(m.now.Add(time.Second))
	case len(valid) >= need && m.recipe.Verify != nil && (submitted == len(r.selected) || deadlinePassed):
		m.closeSubmissions(valid)
	case len(valid) >= need && m.recipe.Verify != nil && outstanding == gone:
		// The ledger closes a spot-checked round's submissions before its
		// deadline only once every selected trainer has an update there
		// (a trainer's reported failure or its leaving the pool is not on
		// the ledger): the draw must cover every trainer that could submit.
		m.setWaiting(fmt.Sprintf("round %d: %d of %d selected trainers failed or left without an update; the submissions close at the deadline %s",
			m.round, len(r.selected)-submitted, len(r.selected), r.deadline.UTC().Format(time.RFC3339)))
		m.setWake(r.deadline)
	case len(valid) >= need && (outstanding == gone || deadlinePassed):
		m.aggregate(valid)
	case deadlinePassed:
		m.close(ledger.RoundFailed{JobID: m.job.Name, Round: m.round,
			Reason: fmt.Sprintf("deadline %s passed with %d valid updates of %d selected; need %d",
				r.deadline.UTC().Format(time.RFC3339), len(valid), len(r.selected), need)}, "", "")
	case outstanding == 0:
		// Every selected trainer answered with too few valid updates. The
		// aggregator signs a RoundFailed only once the ledger shows the
		// deadline passed (a trainer's failure is not on the ledger), so
		// the round fails at its deadline.
		m.rd.Waiting = fmt.Sprintf("round %d: every selected trainer answered with %d valid updates of %d; need %d; the round fails at its deadline %s",
			m.round, len(valid), len(r.selected), need, r.deadline.UTC().Format(time.RFC3339))
		m.setWake(r.deadline)
	default:
		// Still collecting: every joined selected trainer that owes an
		// update and has not had its task since it joined gets it.
		for _, t := range r.selected {
			if m.pool.Joined(t) && !r.tasked[t] && m.outstanding(t) {
				m.task(t)
			}
		}
		m.setWake(r.deadline)
	}
}

func (m *Machine) aggregate(valid []round.Input) {
	slices.SortFunc(valid, func(a, b round.Input) int {
		switch {
		case a.Trainer < b.Trainer:
			return -1
		case a.Trainer > b.Trainer:
			return 1
		}
		return 0
	})
	m.cur.inputs = valid
	m.st = stAggregating
	m.rd.Aggregation = &round.Task{JobID: m.job.Name, Round: m.round, Base: m.base, State: m.srvState,
		Strategy: m.strategy.Name(), Params: maps.Clone(m.job.Strategy.Params), Options: m.job.AggregatorOptions(),
		Inputs: slices.Clone(valid), Arrived: slices.Sorted(maps.Keys(m.cur.updates))}
}

// closeLanded counts the open round's close, a RoundCommitted (its model
// becomes the base) or a RoundFailed of the machine's own, and moves on to
// the next round.
func (m *Machine) closeLanded(typ string) {
	if typ == ledger.TypeRoundCommitted {
		m.base, m.srvState = m.cur.model, m.cur.srvState
		m.committed++
	} else {
		m.failed++
	}
	m.cur = nil
	m.round++
}
