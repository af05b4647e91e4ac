package fsm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// Spot checks (see ledger/spotcheck.go for the protocol): the FSM fixes
// the draw by the hash of the block that closed a round's submissions,
// admits verdicts only from the job's verifiers on drawn updates, refuses
// a commit that counts a drawn update no verifier passed, and keeps
// suspended trainers out of the job's next rounds.

// checkSubmissionsClosed admits the job owner's SubmissionsClosed of an
// open round of a job with spot checks, once.
func (c *execCtx) checkSubmissionsClosed(tx *ledger.Tx, b ledger.SubmissionsClosed) ([]kvWrite, error) {
	job, err := c.job(b.JobID)
	if err != nil {
		return nil, err
	}
	if job == nil {
		return nil, txErr(ledger.CodeNotFound, "job %q is not registered", b.JobID)
	}
	if job.Owner != tx.Signer {
		return nil, txErr(ledger.CodeForbidden, "job %q is owned by coordinator %s; %s may not close its rounds' submissions", b.JobID, job.Owner, tx.Signer)
	}
	if job.Recipe.Verify == nil {
		return nil, txErr(ledger.CodeInvalid, "job %q has no verify rule; its rounds' submissions close at their deadlines", b.JobID)
	}
	r, err := c.openRound(b.JobID, b.Round)
	if err != nil {
		return nil, err
	}
	if r.SubmissionsClosedHeight != 0 {
		return nil, txErr(ledger.CodeAlreadyExists, "round %d of job %q had its submissions closed at height %d", b.Round, b.JobID, r.SubmissionsClosedHeight)
	}
	if err := c.checkCloseTime(r); err != nil {
		return nil, err
	}
	r.SubmissionsClosedHeight = c.height
	return []kvWrite{{roundKey(b.JobID, b.Round), mustJSON(r)}}, nil
}

// drawSeed returns the hash of the block that closed round r's
// submissions, or a rejection when they are not closed or were closed in
// the block being built (whose hash nobody knows yet).
func (c *execCtx) drawSeed(typ string, r *ledger.Round) ([32]byte, error) {
	if r.SubmissionsClosedHeight == 0 {
		return [32]byte{}, txErr(ledger.CodeInvalid, "%s: round %d of job %q has not closed its submissions; the updates to check are drawn by the hash of the block that closes them", typ, r.Round, r.JobID)
	}
	if r.SubmissionsClosedHeight >= c.height {
		return [32]byte{}, txErr(ledger.CodeInvalid, "%s: round %d of job %q closed its submissions in this block; the draw is fixed by its hash, so a verdict comes in a later block", typ, r.Round, r.JobID)
	}
	raw, ok, err := c.get(blockKey(r.SubmissionsClosedHeight))
	if err != nil {
		return [32]byte{}, err
	}
	if !ok {
		return [32]byte{}, &storageError{fmt.Errorf("block %d, which closed the submissions of round %d of job %q, is not stored", r.SubmissionsClosedHeight, r.Round, r.JobID)}
	}
	blk, err := ledger.DecodeBlock(raw)
	if err != nil {
		return [32]byte{}, &storageError{fmt.Errorf("block %d: %w", r.SubmissionsClosedHeight, err)}
	}
	return blk.Hash(), nil
}

// drawnForVerdict checks what every verdict needs: the job names the
// signer as a verifier, the update was submitted to round r (open, or
// closed within its verdict window: verdictRound) and is drawn, and no
// verdict or rejection is recorded for it yet. It returns
// the job and the update.
func (c *execCtx) drawnForVerdict(typ string, tx *ledger.Tx, jobID string, r *ledger.Round, digest string) (*ledger.JobRecord, *ledger.Update, error) {
	job, err := c.job(jobID)
	if err != nil {
		return nil, nil, err
	}
	if job == nil {
		return nil, nil, txErr(ledger.CodeNotFound, "job %q is not registered", jobID)
	}
	v := job.Recipe.Verify
	if v == nil {
		return nil, nil, txErr(ledger.CodeInvalid, "%s: job %q has no verify rule; its updates are not spot-checked", typ, jobID)
	}
	if !v.Names(tx.Signer) {
		return nil, nil, txErr(ledger.CodeForbidden, "%s: verifier %s is not one the verify rule of job %q names (%v)", typ, tx.Signer, jobID, v.By)
	}
	trainer, ok, err := c.get(updateDigestKey(jobID, r.Round, digest))
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, txErr(ledger.CodeNotFound, "%s: no update %s was submitted to round %d of job %q", typ, digest, r.Round, jobID)
	}
	u := &ledger.Update{}
	if ok, err := c.getJSON(updateKey(jobID, r.Round, string(trainer)), u); err != nil {
		return nil, nil, err
	} else if !ok || u.UpdateDigest != digest {
		return nil, nil, &storageError{fmt.Errorf("update index of %s in round %d of job %q is inconsistent", digest, r.Round, jobID)}
	}
	seed, err := c.drawSeed(typ, r)
	if err != nil {
		return nil, nil, err
	}
	if !job.Recipe.DrawnUpdate(seed, jobID, r.Round, u) {
		return nil, nil, txErr(ledger.CodeInvalid, "%s: update %s of trainer %s in round %d of job %q was not drawn for a spot check (draw seed %s, the hash of block %d)",
			typ, digest, u.Trainer, r.Round, jobID, hex.EncodeToString(seed[:]), r.SubmissionsClosedHeight)
	}
	if u.VerifiedBy != "" {
		return nil, nil, txErr(ledger.CodeAlreadyExists, "%s: update %s of round %d of job %q was already verified by %s at height %d", typ, digest, r.Round, jobID, u.VerifiedBy, u.VerifiedHeight)
	}
	// An aggregator's rejection (no step) does not settle a drawn update:
	// the verifiers' rejections still land and suspend its trainer, so an
	// aggregator cannot shield a drawn cheater by rejecting it first.
	if u.Rejected && (u.RejectStep != 0 || typ != ledger.TypeUpdateRejected) {
		return nil, nil, txErr(ledger.CodeAlreadyExists, "%s: update %s of round %d of job %q is already rejected by %s: %s", typ, digest, r.Round, jobID, u.RejectedBy, u.RejectReason)
	}
	if prev, ok := u.VerdictOf(tx.Signer); ok {
		return nil, nil, txErr(ledger.CodeAlreadyExists, "%s: verifier %s already gave its verdict on update %s of round %d of job %q at height %d (passed %v, step %d); one verdict per verifier",
			typ, tx.Signer, digest, r.Round, jobID, prev.Height, prev.Passed, prev.Step)
	}
	return job, u, nil
}

// storedBlockTime returns the time of stored block h.
func storedBlockTime(g getter, h uint64) (time.Time, error) {
	raw, ok, err := g.Get(blockKey(h))
	if err != nil {
		return time.Time{}, err
	}
	if !ok {
		return time.Time{}, fmt.Errorf("block %d is not stored", h)
	}
	blk, err := ledger.DecodeBlock(raw)
	if err != nil {
		return time.Time{}, fmt.Errorf("block %d: %w", h, err)
	}
	return time.Unix(0, blk.Header.Time), nil
}

// verdictsUntil returns the end of the verdict window of round r, whose
// submissions were closed, under rule (ledger.VerifyRule.VerdictsUntil
// over the times of the blocks that opened the round and closed its
// submissions).
func verdictsUntil(g getter, rule *ledger.VerifyRule, r *ledger.Round) (time.Time, error) {
	opened, err := storedBlockTime(g, r.OpenedHeight)
	if err != nil {
		return time.Time{}, err
	}
	closed, err := storedBlockTime(g, r.SubmissionsClosedHeight)
	if err != nil {
		return time.Time{}, err
	}
	return rule.VerdictsUntil(opened, closed, r.Deadline), nil
}

// verdictRound returns round n of job for a verifier's verdict (typ): an
// open round, or one that failed or committed after its submissions
// were closed, while the block time is within its verdict window. Once
// the submissions are closed the draw stands: a round failed (or
// committed) before the verifiers' rejections land still takes them, so
// that ending the round cannot spare a drawn cheater its suspension nor
// give it a fresh draw in the next round.
func (c *execCtx) verdictRound(typ, jobID string, n uint64) (*ledger.Round, error) {
	r, err := c.round(jobID, n)
	if err != nil {
		return nil, err
	}
	if r == nil || r.Status == ledger.StatusOpen {
		return c.openRound(jobID, n)
	}
	ended := fmt.Sprintf("%s at height %d", r.Status, r.ClosedHeight)
	if r.SubmissionsClosedHeight == 0 {
		return nil, txErr(ledger.CodeRoundNotOpen, "%s: round %d of job %q %s before its submissions were closed: nothing was drawn to judge", typ, n, jobID, ended)
	}
	job, err := c.job(jobID)
	if err != nil {
		return nil, err
	}
	if job == nil || job.Recipe.Verify == nil {
		return c.openRound(jobID, n) // drawnForVerdict cannot apply: say the round is closed
	}
	until, err := verdictsUntil(c.b, job.Recipe.Verify, r)
	if err != nil {
		return nil, &storageError{fmt.Errorf("verdict window of round %d of job %q: %w", n, jobID, err)}
	}
	if c.time > until.UnixNano() {
		return nil, txErr(ledger.CodeRoundNotOpen, "%s: round %d of job %q %s, and its verdict window ended at %s (the block at height %d that closed its submissions plus the verify timeout): a drawn update left without a verdict stays unverified",
			typ, n, jobID, ended, until.UTC().Format(time.RFC3339Nano), r.SubmissionsClosedHeight)
	}
	return r, nil
}

// checkUpdateVerified admits a verifier's pass of a drawn update and
// passes the update once the job's quorum of verifiers has.
func (c *execCtx) checkUpdateVerified(tx *ledger.Tx, b ledger.UpdateVerified) ([]kvWrite, error) {
	r, err := c.verdictRound(ledger.TypeUpdateVerified, b.JobID, b.Round)
	if err != nil {
		return nil, err
	}
	job, u, err := c.drawnForVerdict(ledger.TypeUpdateVerified, tx, b.JobID, r, b.UpdateDigest)
	if err != nil {
		return nil, err
	}
	u.Verdicts = append(u.Verdicts, ledger.Verdict{Verifier: tx.Signer, Passed: true, Height: c.height})
	if u.Agreeing(true, 0) >= job.Recipe.Verify.Need() {
		u.VerifiedBy, u.VerifiedHeight = tx.Signer, c.height
	}
	return []kvWrite{{updateKey(b.JobID, b.Round, u.Trainer), mustJSON(u)}}, nil
}

// checkVerifierRejected admits a verifier's rejection of a drawn update,
// which must name the step; once the job's quorum of verifiers has
// rejected it naming the same step, the update is rejected and the
// trainer suspended by the job's rule.
func (c *execCtx) checkVerifierRejected(tx *ledger.Tx, b ledger.UpdateRejected, r *ledger.Round) ([]kvWrite, error) {
	job, u, err := c.drawnForVerdict(ledger.TypeUpdateRejected, tx, b.JobID, r, b.UpdateDigest)
	if err != nil {
		return nil, err
	}
	if b.Step == 0 {
		return nil, txErr(ledger.CodeInvalid, "UpdateRejected by verifier %s: step is required (the first step whose state differs from the replay)", tx.Signer)
	}
	if cm := u.Commitment; cm != nil && b.Step > cm.Steps {
		return nil, txErr(ledger.CodeInvalid, "UpdateRejected by verifier %s: step %d, but update %s commits %d steps", tx.Signer, b.Step, b.UpdateDigest, cm.Steps)
	}
	u.Verdicts = append(u.Verdicts, ledger.Verdict{Verifier: tx.Signer, Step: b.Step, Reason: b.Reason, Height: c.height})
	if u.Agreeing(false, b.Step) < job.Recipe.Verify.Need() {
		// Recorded; the quorum is not reached.
		return []kvWrite{{updateKey(b.JobID, b.Round, u.Trainer), mustJSON(u)}}, nil
	}
	u.Rejected, u.RejectReason, u.RejectedBy, u.RejectStep = true, b.Reason, tx.Signer, b.Step
	ws := []kvWrite{{updateKey(b.JobID, b.Round, u.Trainer), mustJSON(u)}}
	if until := job.Recipe.Verify.SuspendedUntil(b.Round); until > b.Round {
		// A rejection in an earlier round (a late one, after the round
		// failed, or one of overlapping rounds) never shortens a
		// suspension already in force.
		prev, err := c.suspendedUntil(b.JobID, u.Trainer)
		if err != nil {
			return nil, err
		}
		if until > prev {
			ws = append(ws, kvWrite{suspendedKey(b.JobID, u.Trainer), u64Bytes(until)})
		}
	}
	return ws, nil
}

// checkCommitVerified refuses a commit of a job with spot checks before
// its round's submissions closed, or one that counts a drawn update no
// verifier passed.
func (c *execCtx) checkCommitVerified(job *ledger.JobRecord, r *ledger.Round, b ledger.RoundCommitted) error {
	if job.Recipe.Verify == nil {
		return nil
	}
	seed, err := c.drawSeed(ledger.TypeRoundCommitted, r)
	if err != nil {
		return err
	}
	for i, ct := range b.Contributors {
		var u ledger.Update
		if ok, err := c.getJSON(updateKey(b.JobID, b.Round, ct.Trainer), &u); err != nil {
			return err
		} else if !ok {
			continue // the caller names it
		}
		if job.Recipe.DrawnUpdate(seed, b.JobID, b.Round, &u) && u.VerifiedBy == "" {
			return txErr(ledger.CodeInvalid, "contributors[%d]: update %s of trainer %s was drawn for a spot check and no verifier of job %q has passed it; wait for its verdict or reject it",
				i, ct.UpdateDigest, ct.Trainer, b.JobID)
		}
	}
	return nil
}

// checkNotSuspended refuses trainer t, named by what (trainers[i],
// contributors[i], the signer), in round n of job when a verifier's
// rejection suspended it until n or later. Rounds may overlap, so it
// holds for submissions and commits as well as for RoundOpened.
func (c *execCtx) checkNotSuspended(what, job string, n uint64, t string) error {
	until, err := c.suspendedUntil(job, t)
	if err != nil {
		return err
	}
	if until > 0 && n <= until {
		if until == ^uint64(0) {
			return txErr(ledger.CodeInvalid, "%s %s is suspended from job %q for the rest of the job: a verifier rejected its update", what, t, job)
		}
		return txErr(ledger.CodeInvalid, "%s %s is suspended from job %q until after round %d: a verifier rejected its update", what, t, job, until)
	}
	return nil
}

// suspendedUntil returns the last round of job trainer t is suspended
// for (0: none).
func (c *execCtx) suspendedUntil(job, t string) (uint64, error) {
	v, ok, err := c.get(suspendedKey(job, t))
	if err != nil || !ok {
		return 0, err
	}
	until, err := parseU64(v)
	if err != nil {
		return 0, &storageError{fmt.Errorf("suspension of %s in job %q: %w", t, job, err)}
	}
	return until, nil
}

// Suspensions returns the trainers a verifier's rejection suspended from
// job, by trainer ID, each with the last round it may not take part in;
// a suspension that has run out (its last round is behind the job's last
// opened round) is listed too: Suspension.Suspended(n) says whether it
// holds for round n. A job with no suspension, or none registered, has an
// empty list.
func (f *FSM) Suspensions(jobID string) ([]ledger.Suspension, error) {
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: suspensions: state closed")
	}
	defer sn.Close()
	return suspensions(sn, jobID)
}

func suspensions(sn *pebblestore.Snapshot, jobID string) ([]ledger.Suspension, error) {
	prefix := suspendedKey(jobID, "")
	out := []ledger.Suspension{}
	err := sn.Iter(prefix, func(k, v []byte) error {
		until, err := parseU64(v)
		if err != nil {
			return fmt.Errorf("suspension %q: %w", k, err)
		}
		t := strings.TrimPrefix(string(k), string(prefix))
		out = append(out, ledger.Suspension{Trainer: t, Until: until})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: suspensions of job %q: %w", jobID, err)
	}
	return out, nil
}

// checkCloseTime refuses the SubmissionsClosed of round r while a
// selected trainer could still submit: before the round's deadline (by
// the block time, the clock UpdateSubmitted's deadline is checked
// against: an update is accepted while the block time is at or before
// the deadline), the submissions close only once every selected trainer
// has an update on the ledger, has been removed from the ledger's
// members, or is suspended from the round. A coordinator that closed
// earlier would shut out trainers the draw should have covered. A
// trainer's own report of a failure is not on the ledger, so it does not
// count: the coordinator then waits for the deadline.
func (c *execCtx) checkCloseTime(r *ledger.Round) error {
	if c.time > r.Deadline.UnixNano() {
		return nil
	}
	var waiting []string
	for _, t := range r.Trainers {
		if _, ok, err := c.get(updateKey(r.JobID, r.Round, t)); err != nil {
			return err
		} else if ok {
			continue
		}
		m, err := c.member(t)
		if err != nil {
			return err
		}
		if m == nil || !m.Active || m.Role != ledger.RoleTrainer {
			continue // its UpdateSubmitted would be refused at admission
		}
		if err := c.checkNotSuspended("trainer", r.JobID, r.Round, t); err != nil {
			var te *ledger.TxError
			if !errors.As(err, &te) {
				return err
			}
			continue // suspended: its UpdateSubmitted would be refused
		}
		waiting = append(waiting, t)
	}
	if len(waiting) == 0 {
		return nil
	}
	return txErr(ledger.CodeInvalid, "round %d of job %q: submissions may not close before the round's deadline %s (block time %s) while %d of its %d selected trainers can still submit and have not (%s); close them after the deadline, or once every selected trainer has an update",
		r.Round, r.JobID, r.Deadline.UTC().Format(time.RFC3339Nano), time.Unix(0, c.time).UTC().Format(time.RFC3339Nano),
		len(waiting), len(r.Trainers), strings.Join(waiting, ", "))
}

// checkDisclosed requires of an update b to a job with spot checks a
// training commitment of exactly the rule's steps that discloses every
// step's digest, so that a verifier can name the first step its replay
// differs at (ValidateBasic checked that the disclosed digests hash to
// the committed step root).
func checkDisclosed(job *ledger.JobRecord, b *ledger.UpdateSubmitted) error {
	if job == nil || job.Recipe.Verify == nil {
		return nil
	}
	v := job.Recipe.Verify
	switch c := b.Commitment; {
	case c == nil:
		return txErr(ledger.CodeInvalid, "job %q spot-checks its updates (verify): update %s has no commitment, so no commitment.step_digests; disclose the digest of each of its %d steps", b.JobID, b.UpdateDigest, v.Steps)
	case len(c.StepDigests) == 0:
		return txErr(ledger.CodeInvalid, "job %q spot-checks its updates (verify): update %s lacks commitment.step_digests; disclose the digest of each of its %d steps", b.JobID, b.UpdateDigest, c.Steps)
	case c.Steps != uint64(v.Steps):
		return txErr(ledger.CodeInvalid, "commitment.steps %d: job %q spot-checks its updates (verify), each of exactly %d steps (verify.steps)", c.Steps, b.JobID, v.Steps)
	}
	return nil
}
