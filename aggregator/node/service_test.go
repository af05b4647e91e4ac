package node

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedtune/fedtune/aggregator/round"
	aggregatorv1 "github.com/fedtune/fedtune/api/aggregator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// TestSubmitTxRefusals checks what the aggregator refuses to sign before
// it reaches the ledger: non-aggregator transactions, bad bodies, a
// RoundCommitted of a model it did not produce, one that differs from
// the commit the aggregator derived itself, and an UpdateRejected or
// RoundFailed it did not derive itself. (The signing path itself
// runs in internal/devnet's TestNetworkRemoteAggregator.)
func TestSubmitTxRefusals(t *testing.T) {
	dir := t.TempDir()
	store, err := artifact.OpenStore(filepath.Join(dir, "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	local := round.NewLocal(store, filepath.Join(dir, "work"), client.NewSigner(nil, key), nil)
	svc := NewService(local, store, nil, nil, "", nil)
	commit, _ := json.Marshal(ledger.RoundCommitted{JobID: "j", Round: 1, ModelDigest: strings.Repeat("c", 64), Strategy: "fedavg"})
	// The commit this aggregator derived for job k round 2 (as Aggregate
	// leaves it): the coordinator's body may only ask for it.
	own := ledger.RoundCommitted{JobID: "k", Round: 2, ModelDigest: strings.Repeat("d", 64), Strategy: "krum", Params: map[string]string{"num_malicious": "0"},
		Contributors: []ledger.Contribution{{Trainer: strings.Repeat("1", 64), UpdateDigest: strings.Repeat("e", 64), Weight: 1}, {Trainer: strings.Repeat("2", 64), UpdateDigest: strings.Repeat("f", 64)}}}
	svc.commits[roundID{"k", 2}] = own
	rejectBody, _ := json.Marshal(ledger.UpdateRejected{JobID: "k", Round: 2, UpdateDigest: strings.Repeat("e", 64), Reason: "never delivered"})
	failBody, _ := json.Marshal(ledger.RoundFailed{JobID: "k", Round: 2, Reason: "aggregation failed"})
	edit := func(f func(*ledger.RoundCommitted)) []byte {
		b := own
		b.Contributors = append([]ledger.Contribution(nil), own.Contributors...)
		f(&b)
		data, _ := json.Marshal(b)
		return data
	}
	for _, tc := range []struct {
		name, typ string
		body      []byte
		code      codes.Code
		want      string
	}{
		{"coordinator tx", ledger.TypeRoundOpened, []byte("{}"), codes.InvalidArgument, "not signed by the aggregator"},
		{"bad body", ledger.TypeRoundFailed, []byte("{"), codes.InvalidArgument, "RoundFailed body"},
		{"foreign model", ledger.TypeRoundCommitted, commit, codes.FailedPrecondition, "did not produce"},
		{"other strategy", ledger.TypeRoundCommitted, edit(func(b *ledger.RoundCommitted) { b.Strategy = "fedavg" }), codes.FailedPrecondition, `strategy "fedavg", the recipe says "krum"`},
		{"dropped contributor", ledger.TypeRoundCommitted, edit(func(b *ledger.RoundCommitted) { b.Contributors = b.Contributors[:1] }), codes.FailedPrecondition, "contributors"},
		{"other params", ledger.TypeRoundCommitted, edit(func(b *ledger.RoundCommitted) { b.Params = nil }), codes.FailedPrecondition, "params"},
		{"reject an update it did not reject", ledger.TypeUpdateRejected, rejectBody, codes.FailedPrecondition, "this aggregator did not reject it"},
		{"fail a round it did not fail", ledger.TypeRoundFailed, failBody, codes.FailedPrecondition, "this aggregator's aggregation of the round did not fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := svc.SubmitTx(context.Background(), &aggregatorv1.SubmitTxRequest{Type: tc.typ, Body: tc.body})
			if st := status.Convert(err); err == nil || st.Code() != tc.code || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("err %v, want %s containing %q", err, tc.code, tc.want)
			}
		})
	}
	resp, err := svc.Identity(context.Background(), &aggregatorv1.IdentityRequest{})
	if err != nil || resp.AggregatorId != local.ID() {
		t.Errorf("Identity: %v, %v", resp, err)
	}
	if _, err := svc.Aggregate(context.Background(), &aggregatorv1.AggregateRequest{JobId: "j", Round: 1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Aggregate with no inputs: %v", err)
	}
}
