package verifier

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the node's Prometheus metrics, in its own registry.
type metrics struct {
	reg           *prometheus.Registry
	height        prometheus.Gauge
	rounds        prometheus.Counter
	drawn         prometheus.Counter
	replays       *prometheus.CounterVec
	mismatches    prometheus.Counter
	verdicts      *prometheus.CounterVec
	errors        prometheus.Counter
	replaySeconds prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		height: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedtune_verifier_height", Help: "Height of the last block the verifier followed.",
		}),
		rounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_verifier_rounds_total", Help: "Closed rounds of jobs naming this verifier.",
		}),
		drawn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_verifier_drawn_updates_total", Help: "Drawn updates this verifier replayed (each try counts).",
		}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedtune_verifier_replays_total", Help: "Replays run, by result (match, mismatch, error).",
		}, []string{"result"}),
		mismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_verifier_mismatches_total", Help: "Replays that differed from the update or its commitment (rejections, submitted or not).",
		}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedtune_verifier_verdicts_total", Help: "Verdicts on the ledger, by outcome (pass, reject).",
		}, []string{"outcome"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_verifier_errors_total", Help: "Replays or submissions that failed and will be tried again.",
		}),
		replaySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedtune_verifier_replay_seconds", Help: "Time to replay one drawn update.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
	}
	for _, r := range []string{"match", "mismatch", "error"} {
		m.replays.WithLabelValues(r)
	}
	for _, o := range []string{"pass", "reject"} {
		m.verdicts.WithLabelValues(o)
	}
	m.reg.MustRegister(m.height, m.rounds, m.drawn, m.replays, m.mismatches, m.verdicts, m.errors, m.replaySeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
