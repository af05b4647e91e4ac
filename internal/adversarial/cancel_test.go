package adversarial

import (
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// TestAttackJobCancelled: lies about a job's cancellation, on a real
// three-node ledger. A JobCancelled from a coordinator that does not own
// the job, signed by a trainer, an aggregator or an admin, of a job never
// registered: each is refused with its reason and the
// chain does not move. The owner's cancellation fails the open round with
// its reason and is recorded in the job's record; after it, a second
// cancellation, a RoundOpened, a late UpdateSubmitted and a racing
// RoundCommitted are each refused.
func TestAttackJobCancelled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	r := roundsSetup(t, ctx)
	cancel := ledger.JobCancelled{JobID: r.job, Reason: "launched on the wrong network"}

	t.Run("cancel by a coordinator that does not own the job", func(t *testing.T) {
		r.attack(t, ctx, "coordinator-2", cancel, "is owned by coordinator "+r.nw.ID("coordinator"), "may not cancel it")
	})
	for _, who := range []string{"trainer-1", "aggregator", "admin"} {
		t.Run("cancel signed by "+who, func(t *testing.T) {
			r.attack(t, ctx, who, cancel, "JobCancelled needs role coordinator")
		})
	}
	t.Run("cancel of a job never registered", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", ledger.JobCancelled{JobID: "no-such-job", Reason: "x"}, `job "no-such-job" is not registered`)
	})

	h, err := r.signers["coordinator"].Submit(ctx, cancel)
	if err != nil {
		t.Fatalf("the owner's cancellation: %v", err)
	}
	rd, err := r.c.Round(ctx, r.job, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rd.Status != ledger.StatusFailed || rd.ClosedHeight != h || rd.FailReason != ledger.CancelledPrefix+cancel.Reason {
		t.Fatalf("round 1 after the cancellation: status %s at %d, reason %q; want failed at %d with the cancel reason", rd.Status, rd.ClosedHeight, rd.FailReason, h)
	}
	job, err := r.c.Job(ctx, r.job)
	if err != nil {
		t.Fatal(err)
	}
	if cn := job.Cancelled; cn == nil || cn.Height != h || cn.Round != 1 || cn.Reason != cancel.Reason {
		t.Fatalf("job record's cancellation %+v, want round 1 at height %d", cn, h)
	}

	t.Run("second cancel", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", ledger.JobCancelled{JobID: r.job, Reason: "again"}, "was already cancelled at height")
	})
	t.Run("round opened after the cancel", func(t *testing.T) {
		r.attack(t, ctx, "coordinator", ledger.RoundOpened{JobID: r.job, Round: 2, ConfigDigest: digestOf("config"), BaseModel: r.base,
			Strategy: "krum", Trainers: []string{r.nw.ID("trainer-1"), r.nw.ID("trainer-2")}, Deadline: time.Now().Add(time.Hour)},
			"was cancelled at height", "none of its rounds opens again")
	})
	t.Run("update submitted after the cancel", func(t *testing.T) {
		r.attack(t, ctx, "trainer-3", ledger.UpdateSubmitted{JobID: r.job, Round: 1, UpdateDigest: digestOf("late update"),
			DatasetDigest: r.datasets["trainer-3"], Samples: roundsSamples}, "round 1 of job", "failed at height")
	})
	t.Run("commit racing the cancel", func(t *testing.T) {
		r.attack(t, ctx, "aggregator", ledger.RoundCommitted{JobID: r.job, Round: 1, ModelDigest: digestOf("late model"), Strategy: "krum",
			Contributors: r.contrib("trainer-1", "trainer-2")}, "round 1 of job", "failed at height", strings.TrimSpace(ledger.CancelledPrefix))
	})
}
