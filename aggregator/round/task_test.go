package round

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/ledger"
)

// TestTaskProtoRoundTrip checks that a task survives the wire.
func TestTaskProtoRoundTrip(t *testing.T) {
	a := Task{JobID: "j", Round: 3, Base: "b", State: "s", Strategy: "fedadam", Params: map[string]float64{"lr": 0.1},
		Options: aggregator.Options{Clip: 1, NoiseMultiplier: 0.5, Seed: 9, MaxNorm: 2, ChunkElems: 4096, Threads: 2, Strict: true},
		Inputs:  []Input{{Trainer: "t1", Digest: "d1", Dataset: "ds1", Samples: 10}, {Trainer: "t2", Digest: "d2", Dataset: "ds2", Samples: 20}}}
	got, global := FromProto(a.Proto("g"))
	if global != "g" || !reflect.DeepEqual(got, a) {
		t.Fatalf("round trip: %+v (global %q), want %+v", got, global, a)
	}
}

// TestDecodeTx checks that only aggregator-role bodies decode
// and that they decode to what was encoded.
func TestDecodeTx(t *testing.T) {
	for _, b := range []ledger.TxBody{
		ledger.RoundCommitted{JobID: "j", Round: 1, ModelDigest: strings.Repeat("a", 64), Strategy: "fedavg",
			Contributors: []ledger.Contribution{{Trainer: "t", UpdateDigest: "u", Weight: 1}}},
		ledger.RoundFailed{JobID: "j", Round: 2, Reason: "too few"},
		ledger.UpdateRejected{JobID: "j", Round: 1, UpdateDigest: "u", Reason: "nan"},
	} {
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeTx(b.TxType(), data)
		if err != nil || !reflect.DeepEqual(got, b) {
			t.Errorf("%s: %+v, %v", b.TxType(), got, err)
		}
	}
	for _, tc := range []struct{ typ, body, want string }{
		{ledger.TypeRoundOpened, "{}", "not signed by the aggregator"},
		{"Nope", "{}", "not signed by the aggregator"},
		{ledger.TypeRoundFailed, "{", "RoundFailed body"},
		{ledger.TypeRoundFailed, `{"job_id":"j","round":2,"reason":"r","JOB_ID":"k"}`, `unknown field "JOB_ID"`},
		{ledger.TypeRoundFailed, `{"job_id":"j","round":2,"reason":"r","job_id":"k"}`, `duplicate field "job_id"`},
		{ledger.TypeRoundFailed, `{"job_id":"j","round":2,"reason":"r","extra":1}`, `unknown field "extra"`},
		{ledger.TypeRoundCommitted, `{"job_id":"j","round":1,"params":{"mu":"1","MU":"2"}}`, `fields "mu" and "MU" at /params differ only in case`},
	} {
		if _, err := DecodeTx(tc.typ, []byte(tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: err %v, want %q", tc.typ, tc.body, err, tc.want)
		}
	}
}

// FuzzDecodeTx feeds outside bytes to the tx decoder.
func FuzzDecodeTx(f *testing.F) {
	f.Add(ledger.TypeRoundCommitted, []byte(`{"job_id":"j","round":1,"model_digest":"x","contributors":[]}`))
	f.Add(ledger.TypeRoundFailed, []byte(`{"job_id":"j","round":1,"reason":"r"}`))
	f.Add(ledger.TypeUpdateRejected, []byte(`{`))
	f.Fuzz(func(t *testing.T, typ string, body []byte) {
		b, err := DecodeTx(typ, body)
		if err == nil && ledger.TxRoles[b.TxType()] != ledger.RoleAggregator {
			t.Fatalf("decoded a %s body", b.TxType())
		}
	})
}
