package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/fedtune/fedtune/internal/digest"
)

// Spot checks: a job whose recipe has a VerifyRule has a random fraction
// of its updates replayed by verifier members before a round commits.
//
//  1. Trainers submit (UpdateSubmitted) while the round is open.
//  2. The job's coordinator closes submissions (SubmissionsClosed); no
//     UpdateSubmitted is accepted after it. The hash of the block that
//     holds the SubmissionsClosed is the round's draw seed: it covers every
//     submission, and no trainer can know it when it submits.
//  3. An update is drawn when Drawn(seed, job, round, trainer, fraction).
//     Every update of such a job is trained on the job's published data
//     alone (the FSM refuses one that names a trainer's own dataset), so
//     that any can be replayed by someone other than its trainer: a
//     cheater cannot escape the draw by claiming private data.
//  4. A verifier the rule names (By) replays each drawn update and signs a
//     verdict in a later block: UpdateVerified (the replay matches bit for
//     bit) or UpdateRejected with Step set (the first step whose state
//     differs: the trainer's commitment discloses every step's digest,
//     TrainingCommitment.StepDigests, in such a job). A verifier's
//     rejection suspends the trainer from the job by the rule's policy;
//     it is admitted also after an aggregator's rejection of the update,
//     which therefore cannot shield a cheater.
//  5. RoundCommitted is refused while a contributor is a drawn update
//     without an UpdateVerified, or before submissions are closed.
//  6. Verdicts are admitted also after the round failed or committed,
//     until its verdict window ends (VerifyRule.VerdictsUntil): ending a
//     round does not re-roll its draw.
//
// Who can choose the seed: the trainers cannot (they submit before the
// block exists); the coordinator picks only when to close, once per round,
// and cannot see the hash before the block is made; the ledger leader that
// builds the block could grind its hash (by the order of the txs it holds
// or the time it stamps) to steer the draw for a trainer it colludes with.
// That is the trust the design already places in ledger node operators
// for ordering; a fraction near 1 leaves nothing to steer.

// The spot-check transaction type names.
const (
	TypeSubmissionsClosed = "SubmissionsClosed"
	TypeUpdateVerified    = "UpdateVerified"
)

// RoleVerifier replays drawn updates of jobs that name it in their
// VerifyRule and signs the verdicts (UpdateVerified, UpdateRejected).
const RoleVerifier Role = "verifier"

// MinFraction is the smallest VerifyRule.Fraction, 2^-32.
const MinFraction = 0x1p-32

// MaxVerifiers bounds VerifyRule.By.
const MaxVerifiers = 16

// VerifyRule is a job's spot-check rule (RoundRecipe.Verify).
type VerifyRule struct {
	// Fraction is the probability, in [MinFraction, 1], that an update
	// is drawn.
	Fraction float64 `json:"fraction"`
	// By are the member IDs of the verifiers whose verdicts count.
	By []string `json:"by"`
	// SuspendRounds is the number of the job's rounds after the round of
	// a verifier's rejection that may not select the trainer (0: none).
	SuspendRounds uint64 `json:"suspend_rounds,omitempty"`
	// SuspendJob suspends a rejected trainer for the rest of the job.
	SuspendJob bool `json:"suspend_job,omitempty"`
	// Quorum is how many of By must agree to settle a drawn update: it
	// passes with Quorum passes and is rejected with Quorum rejections
	// naming the same step (0: 1, the first verdict settles it).
	Quorum int `json:"quorum,omitempty"`
	// Steps is the number of training steps of every update of the job
	// (the job's local steps; a pre-training job's InnerSteps), 1 to
	// MaxDisclosedSteps. Each update commits to exactly these steps and
	// discloses each one's digest; the FSM refuses a job whose updates
	// would then not fit the chain's max_tx_bytes (CheckDisclosureFits).
	Steps int `json:"steps"`
	// Timeout (nanoseconds) is how long after the block that closed a
	// round's submissions its verdicts are awaited: the coordinator
	// rejects a drawn update still unsettled then as unverified, and once
	// the round is closed (failed or committed) the ledger admits no
	// verdict on it after that (VerdictsUntil). 0: the round's own span,
	// from the block that opened it to its deadline.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// MaxVerifyTimeout bounds VerifyRule.Timeout.
const MaxVerifyTimeout = 7 * 24 * time.Hour

// VerdictsUntil returns the last block time at which a verdict on a
// drawn update of a closed round is admitted: closed (the time of the
// block that closed its submissions) plus the rule's Timeout, or, with no
// Timeout, plus the span from opened (the time of the block that opened
// the round) to deadline (the round's deadline).
func (v *VerifyRule) VerdictsUntil(opened, closed, deadline time.Time) time.Time {
	d := v.Timeout
	if d <= 0 {
		d = max(deadline.Sub(opened), 0)
	}
	return closed.Add(d)
}

// Need returns the effective quorum: Quorum, or 1 when unset.
func (v *VerifyRule) Need() int {
	if v.Quorum > 0 {
		return v.Quorum
	}
	return 1
}

// Names reports whether id is one of the rule's verifiers.
func (v *VerifyRule) Names(id string) bool { return slices.Contains(v.By, id) }

// SuspendedUntil returns the last round of the job that may not select a
// trainer a verifier rejected in round n (n itself when the rule
// suspends no one).
func (v *VerifyRule) SuspendedUntil(n uint64) uint64 {
	switch {
	case v.SuspendJob:
		return math.MaxUint64
	case v.SuspendRounds > math.MaxUint64-n:
		return math.MaxUint64
	}
	return n + v.SuspendRounds
}

// Validate checks the rule without state.
func (v *VerifyRule) Validate() error {
	if math.IsNaN(v.Fraction) || v.Fraction <= 0 || v.Fraction > 1 {
		return fmt.Errorf("recipe.verify.fraction %v: want a number in (0, 1]", v.Fraction)
	}
	if v.Fraction < MinFraction {
		// Drawn reads the fraction as a share of 2^64: one this small
		// draws nothing in practice (1e-300 draws nothing at all), and a
		// recipe would show spot checks that never happen.
		return fmt.Errorf("recipe.verify.fraction %v draws less than one update in 2^32: want at least %v", v.Fraction, MinFraction)
	}
	if len(v.By) == 0 || len(v.By) > MaxVerifiers {
		return fmt.Errorf("recipe.verify.by: %d verifiers listed, want 1 to %d", len(v.By), MaxVerifiers)
	}
	for i, id := range v.By {
		if !digest.Valid(id) {
			return fmt.Errorf("recipe.verify.by[%d] %q is not a member ID (64 lowercase hex)", i, abbrev(id))
		}
		if slices.Contains(v.By[:i], id) {
			return fmt.Errorf("recipe.verify.by[%d] %s is listed twice", i, id)
		}
	}
	if v.Quorum < 0 || v.Quorum > len(v.By) {
		return fmt.Errorf("recipe.verify.quorum %d: want 1 to the %d verifiers listed (0: 1)", v.Quorum, len(v.By))
	}
	if v.Steps < 1 || v.Steps > MaxDisclosedSteps {
		return fmt.Errorf("recipe.verify.steps %d: every update of a spot-checked job discloses the digest of each of its steps; want 1 to %d steps", v.Steps, MaxDisclosedSteps)
	}
	if v.SuspendJob && v.SuspendRounds != 0 {
		return fmt.Errorf("recipe.verify: suspend_rounds %d and suspend_job: give one suspension policy", v.SuspendRounds)
	}
	if v.Timeout < 0 || v.Timeout > MaxVerifyTimeout {
		return fmt.Errorf("recipe.verify.timeout %v: want 0 (the round's span) to %v", v.Timeout, MaxVerifyTimeout)
	}
	return nil
}

// Drawn reports whether the update of trainer in round n of job is drawn
// for a spot check, given seed, the hash of the block that closed the
// round's submissions: the first 8 bytes (big-endian) of
// SHA-256("fedtune/verify-draw/v1" ‖ seed ‖ u64 len(job) ‖ job ‖ u64 n ‖
// trainer), read as a fraction of 2^64, are below fraction. A fraction of
// 1 draws every update.
func Drawn(seed [32]byte, job string, n uint64, trainer string, fraction float64) bool {
	if fraction >= 1 {
		return true
	}
	if !(fraction > 0) {
		return false
	}
	h := sha256.New()
	h.Write([]byte("fedtune/verify-draw/v1"))
	h.Write(seed[:])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(len(job)))
	h.Write(b[:])
	h.Write([]byte(job))
	binary.BigEndian.PutUint64(b[:], n)
	h.Write(b[:])
	h.Write([]byte(trainer))
	x := binary.BigEndian.Uint64(h.Sum(nil)[:8])
	return x < uint64(math.Ldexp(fraction, 64))
}

// DrawnUpdate reports whether update u of round n of the job with recipe
// r is drawn for a spot check under seed: the recipe has a VerifyRule,
// the update names one of the recipe's published datasets (as the FSM
// requires of every update of such a job), and Drawn says so.
func (r *RoundRecipe) DrawnUpdate(seed [32]byte, job string, n uint64, u *Update) bool {
	if r.Verify == nil {
		return false
	}
	if !slices.ContainsFunc(r.Published, func(p PublishedRef) bool { return p.Digest == u.DatasetDigest }) {
		return false
	}
	return Drawn(seed, job, n, u.Trainer, r.Verify.Fraction)
}

// SubmissionsClosed (the job's coordinator) ends the submissions of an
// open round of a job with a VerifyRule. Its block's hash draws the
// updates to spot-check; no UpdateSubmitted is accepted after it.
type SubmissionsClosed struct {
	JobID string `json:"job_id"`
	Round uint64 `json:"round"`
}

// TxType implements TxBody.
func (SubmissionsClosed) TxType() string { return TypeSubmissionsClosed }

// UpdateVerified (a verifier the job names) records that its replay of a
// drawn update of a round whose submissions are closed (an open round, or
// a closed one within its verdict window) matched the update and its
// training commitment bit for bit.
type UpdateVerified struct {
	JobID        string `json:"job_id"`
	Round        uint64 `json:"round"`
	UpdateDigest string `json:"update_digest"`
}

// TxType implements TxBody.
func (UpdateVerified) TxType() string { return TypeUpdateVerified }

// TxSigners maps the transaction types that more than one role may sign
// to those roles; every other type has the one role of TxRoles.
var TxSigners = map[string][]Role{
	TypeUpdateRejected: {RoleAggregator, RoleVerifier},
}

// MaySign reports whether a member with role r may sign a tx of type typ.
func MaySign(typ string, r Role) bool {
	if rs, ok := TxSigners[typ]; ok {
		return slices.Contains(rs, r)
	}
	return TxRoles[typ] == r
}

// SignerRoles says which roles may sign a tx of type typ, for messages.
func SignerRoles(typ string) string {
	if rs, ok := TxSigners[typ]; ok {
		s := ""
		for i, r := range rs {
			if i > 0 {
				s += " or "
			}
			s += string(r)
		}
		return s
	}
	return string(TxRoles[typ])
}

func init() {
	TxRoles[TypeSubmissionsClosed] = RoleCoordinator
	TxRoles[TypeUpdateVerified] = RoleVerifier
	bodyDecoders[TypeSubmissionsClosed] = decodeBody[SubmissionsClosed]
	bodyDecoders[TypeUpdateVerified] = decodeBody[UpdateVerified]
}

// validateSpotCheckBody checks a spot-check body without state.
func validateSpotCheckBody(b TxBody) (bool, error) {
	switch b := b.(type) {
	case SubmissionsClosed:
		if err := checkJobID(b.JobID); err != nil {
			return true, err
		}
		if b.Round == 0 {
			return true, fmt.Errorf("round must be at least 1")
		}
		return true, nil
	case UpdateVerified:
		if err := firstErr(checkJobID(b.JobID), checkDigest("update_digest", b.UpdateDigest)); err != nil {
			return true, err
		}
		if b.Round == 0 {
			return true, fmt.Errorf("round must be at least 1")
		}
		return true, nil
	}
	return false, nil
}

// UpdateStepDigests returns the step digests (TrainingCommitment.
// StepDigests; nil when none were disclosed) of update u of round round of
// job, read from the UpdateSubmitted that submitted it: envelope, the tx
// at u.TxHash (a ledger client's GetTx). A round's read (FSM.Round) does
// not carry them, so that its reply does not grow with disclosed steps.
// It checks that envelope is that tx: its hash is u.TxHash, it is
// trainer u.Trainer's UpdateSubmitted of u.UpdateDigest to that round,
// and its commitment is u's; the caller still checks that the digests
// hash to the step root (StepDigestsRoot).
func UpdateStepDigests(envelope []byte, job string, round uint64, u *Update) ([]string, error) {
	h := TxHash(envelope)
	if hex.EncodeToString(h[:]) != u.TxHash {
		return nil, fmt.Errorf("update %s of trainer %s: tx %x is not the update's tx %s", abbrev(u.UpdateDigest), abbrev(u.Trainer), h[:8], abbrev(u.TxHash))
	}
	tx, err := DecodeTx(envelope)
	if err != nil {
		return nil, fmt.Errorf("update %s of trainer %s: tx %s: %w", abbrev(u.UpdateDigest), abbrev(u.Trainer), abbrev(u.TxHash), err)
	}
	b, ok := tx.Body.(UpdateSubmitted)
	switch {
	case !ok:
		return nil, fmt.Errorf("update %s of trainer %s: tx %s is a %s, not an UpdateSubmitted", abbrev(u.UpdateDigest), abbrev(u.Trainer), abbrev(u.TxHash), tx.Body.TxType())
	case tx.Signer != u.Trainer || b.JobID != job || b.Round != round || b.UpdateDigest != u.UpdateDigest:
		return nil, fmt.Errorf("update %s of trainer %s: tx %s submits update %s of signer %s to round %d of job %q, not to round %d of job %q",
			abbrev(u.UpdateDigest), abbrev(u.Trainer), abbrev(u.TxHash), abbrev(b.UpdateDigest), abbrev(tx.Signer), b.Round, b.JobID, round, job)
	case (b.Commitment == nil) != (u.Commitment == nil):
		return nil, fmt.Errorf("update %s of trainer %s: tx %s and the round disagree on whether it makes a training commitment", abbrev(u.UpdateDigest), abbrev(u.Trainer), abbrev(u.TxHash))
	case b.Commitment == nil:
		return nil, nil
	}
	if c, w := b.Commitment, u.Commitment; c.InputsDigest != w.InputsDigest || c.Steps != w.Steps || c.StepRoot != w.StepRoot {
		return nil, fmt.Errorf("update %s of trainer %s: tx %s commits to step root %s over %d steps, the round to %s over %d", abbrev(u.UpdateDigest), abbrev(u.Trainer), abbrev(u.TxHash), abbrev(c.StepRoot), c.Steps, abbrev(w.StepRoot), w.Steps)
	}
	return b.Commitment.StepDigests, nil
}

// Suspension is a trainer that a verifier's rejection keeps out of a
// job's rounds up to and including round Until (math.MaxUint64: the rest
// of the job), as the FSM's Suspensions query returns it.
type Suspension struct {
	Trainer string `json:"trainer"`
	Until   uint64 `json:"until"`
}

// Suspended reports whether the suspension keeps its trainer out of
// round n.
func (s Suspension) Suspended(n uint64) bool { return n <= s.Until }
