package ledger

// TypeJobCancelled is the type name of JobCancelled.
const TypeJobCancelled = "JobCancelled"

// JobCancelled (coordinator) ends a job before its last round: only the
// job's owner (the coordinator that registered it) may send it, once. The
// ledger records the cancellation in the job's record (JobRecord.Cancelled)
// and fails the job's open round, if any, with a reason saying so; the
// round's spot-check draw, when its submissions were closed, stands as a
// RoundFailed leaves it. No round of a cancelled job opens again, so its
// trainers' updates to the failed round are refused (CodeRoundNotOpen). A
// coordinator sends it when the job's launcher or an admin cancels the
// job (`fedtune round cancel`): the aggregator, which signs RoundFailed
// only for failures it observed itself, cannot close a round on another
// party's word.
type JobCancelled struct {
	JobID  string `json:"job_id"`
	Reason string `json:"reason"`
}

// TxType implements TxBody.
func (JobCancelled) TxType() string { return TypeJobCancelled }

// Cancellation is a JobCancelled as the job's record holds it.
type Cancellation struct {
	Reason string `json:"reason"`
	// Round is the open round the cancellation failed (0: none was open).
	Round  uint64 `json:"round,omitempty"`
	Height uint64 `json:"height"`
	TxHash string `json:"tx_hash"`
}

// CancelledPrefix starts the FailReason of a round a JobCancelled failed.
const CancelledPrefix = "job cancelled: "

func init() {
	TxRoles[TypeJobCancelled] = RoleCoordinator
	bodyDecoders[TypeJobCancelled] = decodeBody[JobCancelled]
}

// validateCancelBody checks a JobCancelled body without state.
func validateCancelBody(b TxBody) (bool, error) {
	c, ok := b.(JobCancelled)
	if !ok {
		return false, nil
	}
	if err := checkJobID(c.JobID); err != nil {
		return true, err
	}
	return true, checkText("reason", c.Reason, MaxReasonLen-len(CancelledPrefix), true)
}
