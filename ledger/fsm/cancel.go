package fsm

import (
	"github.com/fedtune/fedtune/ledger"
)

// checkJobCancelled checks a JobCancelled against the state: the job is
// registered, the signer owns it, and it was not cancelled before. It
// records the cancellation in the job's record and fails the job's last
// round if it is open, as a RoundFailed would (status, closing height,
// reason), leaving its spot-check fields (the draw) as they are.
func (c *execCtx) checkJobCancelled(txHash, signer string, b ledger.JobCancelled) ([]kvWrite, error) {
	job, err := c.job(b.JobID)
	if err != nil {
		return nil, err
	}
	if job == nil {
		return nil, txErr(ledger.CodeNotFound, "job %q is not registered", b.JobID)
	}
	if job.Owner != signer {
		return nil, txErr(ledger.CodeForbidden, "job %q is owned by coordinator %s; %s may not cancel it", b.JobID, job.Owner, signer)
	}
	if cn := job.Cancelled; cn != nil {
		return nil, txErr(ledger.CodeAlreadyExists, "job %q was already cancelled at height %d (tx %s): %s", b.JobID, cn.Height, cn.TxHash, cn.Reason)
	}
	cn := &ledger.Cancellation{Reason: b.Reason, Height: c.height, TxHash: txHash}
	var ws []kvWrite
	if v, ok, err := c.get(jobKey(b.JobID)); err != nil {
		return nil, err
	} else if ok {
		last, err := parseU64(v)
		if err != nil {
			return nil, &storageError{err}
		}
		r, err := c.round(b.JobID, last)
		if err != nil {
			return nil, err
		}
		if r != nil && r.Status == ledger.StatusOpen {
			r.Status, r.ClosedHeight, r.FailReason = ledger.StatusFailed, c.height, ledger.CancelledPrefix+b.Reason
			cn.Round = last
			ws = append(ws, kvWrite{roundKey(b.JobID, last), mustJSON(r)})
		}
	}
	job.Cancelled = cn
	return append(ws, kvWrite{jobRecordKey(b.JobID), mustJSON(*job)}), nil
}
