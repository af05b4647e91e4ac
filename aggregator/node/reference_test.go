package node

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/fedtune/fedtune/aggregator/round"
	"github.com/fedtune/fedtune/ledger"
)

// TestLedgerReference checks where the aggregator takes a round's base,
// reference weights and server state from (the ledger: the round's base
// model, the last commit and its server_state, or a LoRA recipe's initial
// adapter before any commit), and that a request naming anything else is
// refused with what the ledger gives.
func TestLedgerReference(t *testing.T) {
	d := func(c string) string { return strings.Repeat(c, 64) }
	foundation, adapter, m1, m3, st1 := d("f"), d("a"), d("1"), d("3"), d("5")
	lora := &ledger.RoundRecipe{Strategy: "fedavg", InitialAdapter: adapter}
	full := &ledger.RoundRecipe{Strategy: "fedavg"}
	committed := func(n uint64, model, state string) ledger.Round {
		r := ledger.Round{Round: n, Status: ledger.StatusCommitted, ModelDigest: model}
		if state != "" {
			r.Params = map[string]string{ledger.ParamServerState: state}
		}
		return r
	}
	history := []ledger.Round{committed(1, m1, st1), {Round: 2, Status: ledger.StatusFailed}, committed(3, m3, ""), {Round: 4, Status: ledger.StatusOpen, BaseModel: m3}}
	for _, tc := range []struct {
		name         string
		round        uint64
		base, global string
		state        string
		rc           *ledger.RoundRecipe
		roundBase    string
		rounds       []ledger.Round
		wantRef      string
		code         codes.Code
		want         string
	}{
		{name: "full round 1", round: 1, base: foundation, global: foundation, rc: full, roundBase: foundation, wantRef: foundation},
		{name: "lora round 1", round: 1, base: foundation, global: adapter, rc: lora, roundBase: foundation, wantRef: adapter},
		{name: "lora round 2 after a failed round 1", round: 2, base: foundation, global: adapter, rc: lora, roundBase: foundation,
			rounds: []ledger.Round{{Round: 1, Status: ledger.StatusFailed}}, wantRef: adapter},
		{name: "after a commit with state", round: 2, base: m1, global: m1, state: st1, rc: lora, roundBase: m1, rounds: history[:1], wantRef: m1},
		{name: "last commit, not the first", round: 4, base: m3, global: m3, rc: lora, roundBase: m3, rounds: history, wantRef: m3},
		{name: "other base", round: 1, base: d("9"), global: adapter, rc: lora, roundBase: foundation,
			code: codes.InvalidArgument, want: `the request names base model "` + d("9") + `"; the round's base model on the ledger is ` + foundation},
		{name: "lora round 1 against the foundation", round: 1, base: foundation, global: foundation, rc: lora, roundBase: foundation,
			code: codes.InvalidArgument, want: "the ledger gives " + adapter + " (the recipe's initial adapter)"},
		{name: "stale reference", round: 4, base: m3, global: m1, rc: lora, roundBase: m3, rounds: history,
			code: codes.InvalidArgument, want: "the ledger gives " + m3 + " (the model round 3 committed)"},
		{name: "invented state", round: 1, base: foundation, global: foundation, state: st1, rc: full, roundBase: foundation,
			code: codes.InvalidArgument, want: `the request names server state "` + st1 + `"; the ledger gives ""`},
		{name: "dropped state", round: 2, base: m1, global: m1, rc: full, roundBase: m1, rounds: history[:1],
			code: codes.InvalidArgument, want: `the ledger gives "` + st1 + `"`},
		{name: "round opened on another model", round: 4, base: m1, global: m1, rc: full, roundBase: m1, rounds: history,
			code: codes.FailedPrecondition, want: "the round's base model on the ledger is " + m1 + ", not the model " + m3 + " that round 3 committed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &round.Task{JobID: "j", Round: tc.round, Base: tc.base, State: tc.state}
			r := &ledger.Round{JobID: "j", Round: tc.round, BaseModel: tc.roundBase, Status: ledger.StatusOpen}
			ref, code, err := ledgerReference(a, tc.global, tc.rc, r, tc.rounds)
			if tc.want != "" {
				if err == nil || code != tc.code || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %s %v, want %s containing %q", code, err, tc.code, tc.want)
				}
				return
			}
			if err != nil || ref != tc.wantRef || a.Base != tc.roundBase || a.State != tc.state {
				t.Fatalf("got ref %s base %s state %q err %v; want ref %s", ref, a.Base, a.State, err, tc.wantRef)
			}
		})
	}
}
