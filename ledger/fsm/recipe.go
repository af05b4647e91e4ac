package fsm

import (
	"fmt"

	"github.com/fedtune/fedtune/ledger"
)

// roundBase returns the base model round n of job j must start from: the
// recipe's base for round 1 ("" when the recipe records none: any
// registered model), else the model round n−1 committed, or round n−1's
// own base if it did not commit (failed or still open), which by this
// rule is the last committed model or round 1's base. why says which.
func (c *execCtx) roundBase(j *ledger.JobRecord, n uint64) (want, why string, err error) {
	if n <= 1 {
		return j.Recipe.BaseModel, "the base model of the job's recipe", nil
	}
	prev, err := c.round(j.JobID, n-1)
	if err != nil {
		return "", "", err
	}
	if prev == nil {
		return "", "", &storageError{fmt.Errorf("job %q: round %d is the last opened, but it has no record", j.JobID, n-1)}
	}
	if prev.Status == ledger.StatusCommitted {
		return prev.ModelDigest, fmt.Sprintf("the model round %d committed", n-1), nil
	}
	return prev.BaseModel, fmt.Sprintf("the job's last committed model, or its base model if none (round %d is %s and started from it)", n-1, prev.Status), nil
}

func jobRecordKey(job string) []byte { return []byte(prefixJobRecord + job) }

// Job returns a registered job with its recipe.
func (f *FSM) Job(jobID string) (*ledger.JobRecord, error) {
	var j ledger.JobRecord
	if err := f.getRecord(jobRecordKey(jobID), &j, fmt.Sprintf("job %q", jobID)); err != nil {
		return nil, err
	}
	return &j, nil
}

func (c *execCtx) job(id string) (*ledger.JobRecord, error) {
	var j ledger.JobRecord
	ok, err := c.getJSON(jobRecordKey(id), &j)
	if err != nil || !ok {
		return nil, err
	}
	return &j, nil
}

// designatedJob returns the job of a round-closing tx if signer is one of
// its designated aggregators, else a rejection.
func (c *execCtx) designatedJob(typ, jobID, signer string) (*ledger.JobRecord, error) {
	j, err := c.job(jobID)
	if err != nil {
		return nil, err
	}
	if j == nil {
		return nil, txErr(ledger.CodeNotFound, "job %q is not registered", jobID)
	}
	if !j.Recipe.Designates(signer) {
		return nil, txErr(ledger.CodeForbidden, "%s of job %q: aggregator %s is not designated by the job's recipe (aggregators %v)", typ, jobID, signer, j.Recipe.Aggregators)
	}
	return j, nil
}
