package ledger

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJobCancelledGolden pins JobCancelled's encoding (-update rewrites
// testdata/tx_cancel.golden).
func TestJobCancelledGolden(t *testing.T) {
	c := newCast()
	e := c.coord.sign(t, JobCancelled{JobID: "j", Reason: "launched on the wrong network"})
	tx, err := DecodeTx(e)
	if err != nil {
		t.Fatal(err)
	}
	h := TxHash(e)
	got := fmt.Sprintf("%s %s %s\n", tx.Body.TxType(), hex.EncodeToString(h[:]), e)
	path := filepath.Join("testdata", "tx_cancel.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestJobCancelledGolden -update)", err)
	}
	if got != string(want) {
		t.Fatalf("JobCancelled encoding changed:\ngot\n%s\nwant\n%s", got, want)
	}
}

func TestJobCancelledValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		body JobCancelled
		want string // "" valid
	}{
		{"ok", JobCancelled{JobID: "j", Reason: "wrong network"}, ""},
		{"no job", JobCancelled{Reason: "x"}, "job_id"},
		{"no reason", JobCancelled{JobID: "j"}, "reason is required"},
		{"long reason", JobCancelled{JobID: "j", Reason: strings.Repeat("x", MaxReasonLen)}, "reason is"},
		{"control char", JobCancelled{JobID: "j", Reason: "a\x1bb"}, "reason"},
	} {
		err := validateBody(tc.body)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}
