package inference

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus metrics, in its own registry.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	promptTokens prometheus.Counter
	genTokens    prometheus.Counter
	tokensPerSec prometheus.Histogram
	ttft         prometheus.Histogram
	queue        prometheus.Gauge
	active       prometheus.Gauge
	preparing    prometheus.Gauge
	connsOver    prometheus.Counter
	swaps        prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedtune_inference_requests_total", Help: "HTTP requests answered, by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fedtune_inference_request_duration_seconds", Help: "Time from a request's arrival to the end of its answer.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"endpoint"}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_inference_prompt_tokens_total", Help: "Prompt tokens of the requests that ran.",
		}),
		genTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_inference_generated_tokens_total", Help: "Tokens generated.",
		}),
		tokensPerSec: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedtune_inference_tokens_per_second", Help: "Generated tokens per second of each answer, after its first token.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedtune_inference_time_to_first_token_seconds", Help: "Time from a request's arrival to its first generated token.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedtune_inference_queue_length", Help: "Requests waiting for a generation slot.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedtune_inference_active_requests", Help: "Requests generating now.",
		}),
		preparing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedtune_inference_preparing_requests", Help: "Requests decoding and tokenizing their prompts now (at most --max-preparing).",
		}),
		connsOver: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_inference_connections_over_cap_total", Help: "Connections answered 429 because their address had --max-conns-per-ip open.",
		}),
		swaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_inference_model_swaps_total", Help: "Times the served model was replaced.",
		}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.promptTokens, m.genTokens, m.tokensPerSec, m.ttft, m.queue, m.active, m.preparing, m.connsOver, m.swaps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Register adds collectors to the server's registry, served at /metrics
// beside its own (a ledger follower's, say). A collector already
// registered is an error.
func (s *Server) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := s.met.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
