package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fedtune/fedtune/ledger"
)

// counterValue reads a counter's value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestVerdictReader feeds a verdictReader the successive states of a
// verifying round as the ledger shows them and checks that each draw and
// verdict becomes one event, once, and is counted once.
func TestVerdictReader(t *testing.T) {
	tr := func(i int) string { return fmt.Sprintf("%064x", i) }
	upd := func(i int, drawn bool, f func(*ledger.Update)) ledger.Update {
		u := ledger.Update{Trainer: tr(i), Drawn: drawn}
		if f != nil {
			f(&u)
		}
		return u
	}
	pass := func(u *ledger.Update) { u.VerifiedBy = tr(9) }
	reject := func(u *ledger.Update) {
		u.Rejected, u.RejectedBy, u.RejectReason, u.RejectStep = true, tr(9), "step 3 differs", 3
	}
	steps := []struct {
		name  string
		round ledger.Round
		want  []Event
	}{
		{"no draw yet", ledger.Round{Updates: []ledger.Update{upd(1, false, nil), upd(2, false, nil), upd(3, false, nil)}}, nil},
		{"draw", ledger.Round{DrawSeed: "ab", Updates: []ledger.Update{upd(1, true, nil), upd(2, true, nil), upd(3, false, nil)}},
			[]Event{DrawFixed{Round: 4, Drawn: []string{tr(1), tr(2)}}}},
		{"one passes", ledger.Round{DrawSeed: "ab", Updates: []ledger.Update{upd(1, true, pass), upd(2, true, nil), upd(3, false, nil)}},
			[]Event{UpdateVerdict{Round: 4, Trainer: tr(1), Passed: true}}},
		{"read again", ledger.Round{DrawSeed: "ab", Updates: []ledger.Update{upd(1, true, pass), upd(2, true, nil), upd(3, false, nil)}}, nil},
		{"one rejected, an undrawn one too", ledger.Round{DrawSeed: "ab", Updates: []ledger.Update{upd(1, true, pass), upd(2, true, reject), upd(3, false, reject)}},
			[]Event{UpdateVerdict{Round: 4, Trainer: tr(2), Reason: "step 3 differs"}}},
	}
	met, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	vr := &verdictReader{job: "spot", round: 4, log: slog.New(slog.DiscardHandler), met: met}
	for _, st := range steps {
		if got := vr.events(context.Background(), &st.round); !reflect.DeepEqual(got, st.want) {
			t.Fatalf("%s: events %+v, want %+v", st.name, got, st.want)
		}
	}
	for _, c := range []struct {
		name string
		c    prometheus.Counter
		want float64
	}{
		{"drawn", met.Drawn, 2},
		{"pass", met.Verdicts.WithLabelValues(VerdictPass), 1},
		{"reject", met.Verdicts.WithLabelValues(VerdictReject), 1},
	} {
		if got := counterValue(t, c.c); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestNewMetrics registers the metrics once and refuses a second
// registration on the same registry.
func TestNewMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registered twice on one registry")
	}
	m, err := NewMetrics(nil)
	if err != nil || m.Drawn == nil {
		t.Fatalf("NewMetrics(nil): %+v, %v", m, err)
	}
}
