package audit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// VerifyOptions.Jobs: an unreadable job file is an error naming it; a job
// file whose digest no round committed to changes nothing; a round-1
// mismatch names the round.
func TestVerifyJobsOption(t *testing.T) {
	c := newTestChain(t)
	e := c.export(t)
	missing := filepath.Join(t.TempDir(), "no-such-job.yaml")
	if _, err := Verify(context.Background(), e, VerifyOptions{Artifacts: c.artifacts, Jobs: []string{missing}}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing job file: %v, want an error naming %s", err, missing)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: x\nrounds: -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(context.Background(), e, VerifyOptions{Artifacts: c.artifacts, Jobs: []string{bad}}); err == nil || errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("invalid job file: %v, want an error naming bad.yaml", err)
	}
	rep, err := Verify(context.Background(), e, VerifyOptions{Artifacts: c.artifacts, Jobs: []string{"../../configs/jobs/demo-lora.yaml"}})
	if err != nil || rep.Reaggregated != 2 {
		t.Errorf("with an unrelated LoRA job file: %+v %v, want 2 rounds re-aggregated", rep, err)
	}

	// A round 1 committed with another model than its updates give.
	c2 := newTestChainWith(t, func(round uint64, digest string, dir string) string {
		if round != 1 {
			return digest
		}
		return put(t, dir, weights(t, 99), true)
	})
	_, err = Verify(context.Background(), c2.export(t), VerifyOptions{Artifacts: c2.artifacts})
	var m *Mismatch
	if !errors.As(err, &m) || m.Field != "model_digest" || !strings.Contains(m.Msg, `job "job-1" round 1`) {
		t.Errorf("round 1 mismatch: %v, want a model_digest mismatch naming job-1 round 1", err)
	}
}
