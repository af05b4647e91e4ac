package client

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// listingLedger answers the published-datasets listing from pages, keyed
// by the after of the request; refuse makes its first refuse answers
// ResourceExhausted.
type listingLedger struct {
	ledgerv1.UnimplementedLedgerServer
	pages  map[string]ledger.PublishedPage
	refuse atomic.Int32
	calls  atomic.Int32
}

func (s *listingLedger) Query(_ context.Context, req *ledgerv1.QueryRequest) (*ledgerv1.QueryResponse, error) {
	s.calls.Add(1)
	if s.refuse.Add(-1) >= 0 {
		return nil, status.Error(codes.ResourceExhausted, "query: caller is over its read rate")
	}
	p, ok := s.pages[req.After]
	if !ok || req.Kind != ledgerv1.QueryKind_QUERY_KIND_PUBLISHED_DATASETS {
		return nil, status.Errorf(codes.NotFound, "no page after %q", req.After)
	}
	js, _ := json.Marshal(p)
	return &ledgerv1.QueryResponse{Json: js}, nil
}

func listing(name string, height, index uint64) ledger.PublishedListing {
	return ledger.PublishedListing{Dataset: ledger.Dataset{Name: name, Height: height, Published: true}, TxIndex: index}
}

// TestPublishedDatasets: the client reads every page and orders the
// datasets as they were published; a node whose pages go back, repeat a
// name or point the next page elsewhere is refused; a read refused for
// its rate is asked again.
func TestPublishedDatasets(t *testing.T) {
	good := map[string]ledger.PublishedPage{
		"":  {Datasets: []ledger.PublishedListing{listing("a", 5, 1), listing("b", 5, 0)}, Next: "b"},
		"b": {Datasets: []ledger.PublishedListing{listing("c", 2, 0)}},
	}
	for _, tc := range []struct {
		name  string
		pages map[string]ledger.PublishedPage
		want  string // names in order, or the error's text
	}{
		{"in publication order", good, "c,b,a"},
		{"a page goes back", map[string]ledger.PublishedPage{
			"":  {Datasets: []ledger.PublishedListing{listing("b", 1, 0)}, Next: "b"},
			"b": {Datasets: []ledger.PublishedListing{listing("a", 1, 1)}},
		}, "names must increase"},
		{"a name twice", map[string]ledger.PublishedPage{
			"": {Datasets: []ledger.PublishedListing{listing("a", 1, 0), listing("a", 2, 0)}},
		}, "names must increase"},
		{"next points elsewhere", map[string]ledger.PublishedPage{
			"":  {Datasets: []ledger.PublishedListing{listing("a", 1, 0)}, Next: "a"},
			"a": {Datasets: []ledger.PublishedListing{}, Next: "a"},
		}, "says the next page starts after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &listingLedger{pages: tc.pages}
			srv.refuse.Store(2)
			addr, k, kid := serveLedger(t, srv)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := Dial(ctx, addr, k, tlsid.ExpectID(kid))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			all, err := c.PublishedDatasets(ctx)
			if strings.Contains(tc.want, ",") {
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, d := range all {
					names = append(names, d.Name)
				}
				if strings.Join(names, ",") != tc.want {
					t.Fatalf("order %v, want %s", names, tc.want)
				}
				if srv.calls.Load() != 4 {
					t.Errorf("%d queries; want 2 refused for the rate and asked again, then 2 pages", srv.calls.Load())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
