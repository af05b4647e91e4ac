package cli

import (
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

func TestDecodeTxBody(t *testing.T) {
	cases := []struct {
		typ, body, wantErr string
	}{
		{ledger.TypeRoundFailed, `{"job_id":"j","round":1,"reason":"late"}`, ""},
		{ledger.TypeRoundOpened, `{"job_id":"j","round":1,"deadline":"2026-01-01T00:00:00Z","trainers":["a"]}`, ""},
		{"Nope", `{}`, `unknown tx type "Nope"`},
		{ledger.TypeRoundFailed, `{"job_id":"j","bogus":1}`, `unknown field "bogus"`},
		{ledger.TypeRoundFailed, `{"job_id":"j"} {}`, "trailing data"},
		{ledger.TypeRoundFailed, `{"job_id":"j","JOB_ID":"k"}`, `unknown field "JOB_ID" at the top level (field names are case-sensitive: did you mean "job_id"?)`},
		{ledger.TypeRoundFailed, `{"job_id":"j","job_id":"k"}`, `duplicate field "job_id"`},
		{ledger.TypeRoundFailed, `{"job_id":`, "RoundFailed body"},
	}
	for _, tc := range cases {
		t.Run(tc.typ+tc.wantErr, func(t *testing.T) {
			b, err := decodeTxBody(tc.typ, []byte(tc.body))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.TxType() != tc.typ {
				t.Fatalf("type %s, want %s", b.TxType(), tc.typ)
			}
		})
	}
	if rf, ok := mustDecode(t, ledger.TypeRoundFailed, `{"job_id":"j","round":3,"reason":"r"}`).(ledger.RoundFailed); !ok || rf.Round != 3 {
		t.Fatalf("decoded %#v", rf)
	}
}

func mustDecode(t *testing.T, typ, body string) ledger.TxBody {
	t.Helper()
	b, err := decodeTxBody(typ, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
