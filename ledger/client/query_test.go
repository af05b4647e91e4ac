package client

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// queryLedger answers Query from fixed JSON per kind and records the
// minimum heights it was asked for.
type queryLedger struct {
	ledgerv1.UnimplementedLedgerServer
	answers    map[ledgerv1.QueryKind]string
	minHeights []uint64
}

func (s *queryLedger) Query(_ context.Context, req *ledgerv1.QueryRequest) (*ledgerv1.QueryResponse, error) {
	s.minHeights = append(s.minHeights, req.MinHeight)
	js, ok := s.answers[req.Kind]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s %s: record not found", req.Kind, req.Key)
	}
	return &ledgerv1.QueryResponse{Json: []byte(js)}, nil
}

// The typed queries read the ledger's JSON into the ledger's types:
// RoundAt passes its minimum height on, Lineage refuses JSON that names no
// model, and a record the node does not hold wraps ErrRecordNotFound.
func TestTypedQueries(t *testing.T) {
	round, err := json.Marshal(ledger.Round{JobID: "j", Round: 2, Status: ledger.StatusOpen})
	if err != nil {
		t.Fatal(err)
	}
	lineage, err := json.Marshal(ledger.Lineage{Model: ledger.Model{Digest: strings.Repeat("ab", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &queryLedger{answers: map[ledgerv1.QueryKind]string{
		ledgerv1.QueryKind_QUERY_KIND_ROUND:   string(round),
		ledgerv1.QueryKind_QUERY_KIND_LINEAGE: string(lineage),
		ledgerv1.QueryKind_QUERY_KIND_NONCE:   "7",
	}}
	addr, k, kid := serveLedger(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, k, tlsid.ExpectID(kid))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	r, err := c.RoundAt(ctx, "j", 2, 41)
	if err != nil || r.Round != 2 || r.JobID != "j" {
		t.Fatalf("RoundAt = %+v, %v", r, err)
	}
	if got := srv.minHeights[len(srv.minHeights)-1]; got != 41 {
		t.Fatalf("RoundAt asked for min height %d, want 41", got)
	}
	if _, err := c.Round(ctx, "j", 2); err != nil || srv.minHeights[len(srv.minHeights)-1] != 0 {
		t.Fatalf("Round: %v, min height %d; want 0", err, srv.minHeights[len(srv.minHeights)-1])
	}
	l, err := c.Lineage(ctx, "m")
	if err != nil || l.Model.Digest != strings.Repeat("ab", 32) {
		t.Fatalf("Lineage = %+v, %v", l, err)
	}
	if n, err := c.Nonce(ctx, "k"); err != nil || n != 7 {
		t.Fatalf("Nonce = %d, %v; want 7", n, err)
	}
	if _, err := c.Dataset(ctx, "d"); !errors.Is(err, ledger.ErrRecordNotFound) {
		t.Fatalf("Dataset of an absent record: %v; want ErrRecordNotFound", err)
	}
	srv.answers[ledgerv1.QueryKind_QUERY_KIND_LINEAGE] = `{"rounds":[]}`
	if _, err := c.Lineage(ctx, "m"); err == nil || !strings.Contains(err.Error(), "no model digest") {
		t.Fatalf("Lineage of JSON without a model: %v", err)
	}
	delete(srv.answers, ledgerv1.QueryKind_QUERY_KIND_LINEAGE)
	if _, err := c.Lineage(ctx, "m"); !errors.Is(err, ledger.ErrRecordNotFound) {
		t.Fatalf("Lineage of an absent model: %v; want ErrRecordNotFound", err)
	}
}

// FuzzDecodeLineage: lineage JSON from a node never panics the decoder,
// and what it accepts names a model and encodes again.
func FuzzDecodeLineage(f *testing.F) {
	f.Add([]byte(`{"model":{"digest":"` + strings.Repeat("0", 64) + `"}}`))
	f.Add([]byte(`{"rounds":[{"job_id":"j"}]}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := DecodeLineage(data)
		if err != nil {
			return
		}
		if l.Model.Digest == "" {
			t.Fatal("accepted a lineage that names no model")
		}
		if _, err := json.Marshal(l); err != nil {
			t.Fatalf("accepted lineage does not encode: %v", err)
		}
	})
}
