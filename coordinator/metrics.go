package coordinator

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Verdict kinds, the "verdict" label of fedtune_coordinator_verdicts_total.
const (
	VerdictPass   = "pass"   // a verifier's UpdateVerified
	VerdictReject = "reject" // a verifier's UpdateRejected
)

// Metrics counts what the coordinator sees of its jobs' spot checks (and
// their cancellations), as
// this process sees them (a restart starts again from zero). Create it
// with NewMetrics.
type Metrics struct {
	// Drawn counts updates the ledger's draws picked for a spot check.
	Drawn prometheus.Counter
	// Verdicts counts verifiers' verdicts on drawn updates by kind:
	// VerdictPass, VerdictReject.
	Verdicts *prometheus.CounterVec
	// Unverified counts drawn updates rejected on the ledger because no
	// verifier's verdict came by the job's verify timeout.
	Unverified prometheus.Counter
	// Suspensions counts trainers a rejection kept out of later rounds
	// (the job's verify policy), each time it did.
	Suspensions prometheus.Counter
	// Cancelled counts jobs a CancelJob stopped (their JobCancelled on the
	// ledger).
	Cancelled prometheus.Counter
}

// NewMetrics makes the coordinator's metrics and registers them on reg
// (nil: not registered anywhere, still counted). Metric names start with
// "fedtune_coordinator_"; registering them twice on one registry is an
// error.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Drawn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_coordinator_drawn_updates_total", Help: "Updates the ledger's spot-check draws picked.",
		}),
		Verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedtune_coordinator_verdicts_total", Help: "Verifiers' verdicts on drawn updates, by verdict (pass, reject).",
		}, []string{"verdict"}),
		Unverified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_coordinator_unverified_total", Help: "Drawn updates rejected on the ledger for want of a verdict by the verify timeout.",
		}),
		Suspensions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_coordinator_suspensions_total", Help: "Trainers suspended from later rounds after a verifier's rejection.",
		}),
		Cancelled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_coordinator_jobs_cancelled_total", Help: "Jobs stopped by CancelJob (fedtune round cancel), their JobCancelled on the ledger.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Drawn, m.Verdicts, m.Unverified, m.Suspensions, m.Cancelled} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("coordinator metrics: %w", err)
			}
		}
	}
	return m, nil
}
