package artifact

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the artifact service's traffic. Create it with NewMetrics.
type Metrics struct {
	// BytesIn counts blob bytes received by uploads.
	BytesIn prometheus.Counter
	// BytesOut counts blob bytes sent by downloads.
	BytesOut prometheus.Counter
	// Uploads counts finished uploads by result: "stored", "existed".
	Uploads *prometheus.CounterVec
	// Downloads counts finished downloads.
	Downloads prometheus.Counter
	// Rejected counts refused or cut-off transfers by reason:
	// "digest_mismatch", "size_mismatch", "too_large", "bad_request",
	// "unauthorized" (upload), "download_denied", "quota" (the uploader's
	// stored bytes), "quota_in_flight" (its uploads under way), "idle"
	// (a stream closed after the idle timeout).
	Rejected *prometheus.CounterVec
}

// NewMetrics makes the service's metrics and registers them on reg (nil:
// not registered anywhere, still counted). Metric names start with
// "fedtune_artifact_"; registering them twice on one registry is an error.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		BytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_artifact_bytes_received_total", Help: "Blob bytes received by uploads.",
		}),
		BytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_artifact_bytes_sent_total", Help: "Blob bytes sent by downloads.",
		}),
		Uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedtune_artifact_uploads_total", Help: "Finished uploads by result (stored, existed).",
		}, []string{"result"}),
		Downloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedtune_artifact_downloads_total", Help: "Downloads sent to the end.",
		}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedtune_artifact_rejected_total", Help: "Refused or cut-off transfers by reason (digest_mismatch, size_mismatch, too_large, bad_request, unauthorized, download_denied, quota, quota_in_flight, idle).",
		}, []string{"reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.BytesIn, m.BytesOut, m.Uploads, m.Downloads, m.Rejected} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("artifact metrics: %w", err)
			}
		}
	}
	return m, nil
}
