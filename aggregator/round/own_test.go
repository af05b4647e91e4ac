package round

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// TestOwnVet checks what an aggregator signs from its own record:
// its own rejections and failures, with its own reason whatever the asking
// body says, and the model and contributors it produced; everything else
// is refused with ErrNotOwn naming why.
func TestOwnVet(t *testing.T) {
	d := func(c string) string { return strings.Repeat(c, 64) }
	var o Own
	o.Reject("j", 1, d("a"), "update aaa is not finite")
	o.Fail("j", 2, "no inputs left")
	o.produced("j", 3, Result{Model: d("m"), Weights: map[string]float64{"t1": 0.5, "t2": 0.5}})
	contrib := []ledger.Contribution{{Trainer: "t1", Weight: 0.5}, {Trainer: "t2", Weight: 0.5}}
	for _, tc := range []struct {
		name string
		body ledger.TxBody
		want ledger.TxBody // nil: refused
		why  string
	}{
		{"own rejection, own reason", ledger.UpdateRejected{JobID: "j", Round: 1, UpdateDigest: d("a"), Reason: "whatever"},
			ledger.UpdateRejected{JobID: "j", Round: 1, UpdateDigest: d("a"), Reason: "update aaa is not finite"}, ""},
		{"another update", ledger.UpdateRejected{JobID: "j", Round: 1, UpdateDigest: d("b"), Reason: "never delivered"}, nil, "this aggregator did not reject it"},
		{"another round", ledger.UpdateRejected{JobID: "j", Round: 2, UpdateDigest: d("a")}, nil, "did not reject it"},
		{"another job", ledger.UpdateRejected{JobID: "k", Round: 1, UpdateDigest: d("a")}, nil, "did not reject it"},
		{"own failure, own reason", ledger.RoundFailed{JobID: "j", Round: 2, Reason: "x"},
			ledger.RoundFailed{JobID: "j", Round: 2, Reason: "aggregation failed: no inputs left"}, ""},
		{"no failure, no ledger", ledger.RoundFailed{JobID: "j", Round: 1, Reason: "aggregation failed"}, nil, "no ledger to check the round's deadline on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := o.Vet(context.Background(), nil, tc.body, nil)
			if tc.want == nil {
				if !errors.Is(err, ErrNotOwn) || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("err %v, want ErrNotOwn containing %q", err, tc.why)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		rc   ledger.RoundCommitted
		why  string
	}{
		{"own commit", ledger.RoundCommitted{JobID: "j", Round: 3, ModelDigest: d("m"), Contributors: contrib}, ""},
		{"not aggregated", ledger.RoundCommitted{JobID: "j", Round: 1, ModelDigest: d("m"), Contributors: contrib}, "did not aggregate the round"},
		{"other model", ledger.RoundCommitted{JobID: "j", Round: 3, ModelDigest: d("n"), Contributors: contrib}, "this aggregator produced"},
		{"dropped contributor", ledger.RoundCommitted{JobID: "j", Round: 3, ModelDigest: d("m"), Contributors: contrib[:1]}, "lists contributors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := o.vetCommit(tc.rc)
			if tc.why == "" && err != nil || tc.why != "" && (!errors.Is(err, ErrNotOwn) || !strings.Contains(err.Error(), tc.why)) {
				t.Fatalf("err %v, want %q", err, tc.why)
			}
		})
	}
}

// TestFetchWithRetry checks that a fetch is tried FetchAttempts times and
// that the error says so.
func TestFetchWithRetry(t *testing.T) {
	defer func(b time.Duration) { fetchBackoff = b }(fetchBackoff)
	fetchBackoff = time.Millisecond
	calls := 0
	err := FetchWithRetry(context.Background(), "x", func(context.Context, string) error { calls++; return errors.New("no such blob") })
	if calls != FetchAttempts || err == nil || !strings.Contains(err.Error(), "not in the artifact store after 3 attempts: no such blob") {
		t.Fatalf("%d calls, err %v", calls, err)
	}
	calls = 0
	err = FetchWithRetry(context.Background(), "x", func(context.Context, string) error {
		if calls++; calls < 2 {
			return errors.New("busy")
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("%d calls, err %v; want success on the second", calls, err)
	}
}
