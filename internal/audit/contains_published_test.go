package audit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// leavesStore serves a fresh artifact store holding blobs on loopback
// (plain text: what is checked here is the data, not the channel).
func leavesStore(t *testing.T, blobs ...[]byte) *artifact.Client {
	t.Helper()
	st, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		if _, _, err := st.Put(context.Background(), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := artifact.NewServer(artifact.ServerConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, tlsid.InsecureServerOption()) }()
	c, err := artifact.Dial(ln.Addr().String(), tlsid.InsecureDialOption())
	if err != nil {
		t.Fatal(err)
	}
	c.Retries = 0
	t.Cleanup(func() { c.Close(); cancel(); <-done; st.Close() })
	return c
}

// TestContainsPublished: a published dataset is answered from its leaves
// in the artifact store, without asking anyone (the prover is nil), and
// the proof is checked against the ledger's root: a sample of it is
// included, another excluded; a store without its leaves, or with a
// record whose root the leaves do not give, leaves it unanswered.
func TestContainsPublished(t *testing.T) {
	d := &datasets.Dataset{Name: "pub"}
	for i := range 9 {
		d.Samples = append(d.Samples, datasets.Sample{ID: fmt.Sprint(i), Text: fmt.Sprintf("published sample %d", i)})
	}
	p, err := datasets.Publish(d, datasets.PublishOptions{Name: "pub", Format: dspub.FormatText, Licence: "CC0-1.0", ShardSamples: 4, Owner: strings.Repeat("a", 64)})
	if err != nil {
		t.Fatal(err)
	}
	rec := ledger.Dataset{Digest: strings.Repeat("d", 64), Name: "pub", Owner: strings.Repeat("a", 64), Samples: p.Manifest.Samples,
		Root: p.Manifest.Root, Published: true, Leaves: p.Manifest.Leaves}
	ctx := context.Background()
	store := leavesStore(t, p.Leaves)
	in, out := datasets.SampleDigest("published sample 4"), datasets.SampleDigest("never published")
	for _, tc := range []struct {
		name   string
		src    LeavesSource
		rec    ledger.Dataset
		leaf   [32]byte
		result string
		detail string
	}{
		{"included", store, rec, in, Included, "proved here from its published leaves"},
		{"excluded", store, rec, out, Excluded, "proved here from its published leaves"},
		{"leaves not in the store", leavesStore(t), rec, in, Unanswered, "published leaves " + rec.Leaves},
		{"root not the leaves'", store, func() ledger.Dataset { r := rec; r.Root = strings.Repeat("0", 64); return r }(), in, Unanswered, ReasonBadProof},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := ContainsWithLeaves(ctx, nil, tc.src, "m", tc.leaf, []ledger.Dataset{tc.rec}, 0)
			if err != nil {
				t.Fatal(err)
			}
			r := rep.Datasets[0]
			if r.Result != tc.result || !strings.Contains(r.Detail, tc.detail) {
				t.Fatalf("%s (%s), want %s with %q", r.Result, r.Detail, tc.result, tc.detail)
			}
		})
	}
}
