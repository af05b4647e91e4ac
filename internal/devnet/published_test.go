package devnet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/scan"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/audit/provenancetest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

// TestNetworkPublishedData: trainer-1 publishes a dataset (CC-BY-4.0) to
// the coordinator's artifact store; trainer-2 has no data of its own. A
// job on the published data gives each trainer a disjoint range of it in
// round 1; trainer-2 fetches and checks its range and trains on it, and
// its update names the dataset and the range the round gave it; the model
// commits and its licences are CC0-1.0 (trainer-1's own data) and
// CC-BY-4.0. A job that accepts only MIT is refused, naming the dataset's
// licence. A shard edited in the store is refused by a fetching member,
// naming the shard and the sample.
func TestNetworkPublishedData(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n := prepare(t, ctx, Options{JobName: "published", Trainers: 2, Rounds: 1, LocalSteps: 3, MinTrainers: 2, PretrainSteps: 2})

	// trainer-2 has no data of its own.
	cfgPath := n.path("trainer-2", "trainer.yaml")
	var cfg map[string]any
	readYAML(t, cfgPath, &cfg)
	delete(cfg, "data")
	if err := writeYAML(cfgPath, cfg); err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	// trainer-1 publishes the shipped shard the devnet would have given
	// trainer-2.
	k1 := n.Keys["trainer-1"]
	d, ok := trainer.ReadInstruct(n.Shards[1])
	format := dspub.FormatInstruct
	if !ok {
		format = dspub.FormatText
		if d, err = datasets.Load(n.Shards[1], datasets.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	ac := publishedArtifacts(t, n, k1)
	sm, err := trainer.PublishDataset(ctx, ac, k1, d, []byte("# Arithmetic\nShipped test data.\n"),
		datasets.PublishOptions{Name: "arith", Format: format, Licence: "CC-BY-4.0", ShardSamples: 64})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewSigner(lc, k1).Submit(ctx, ledger.DatasetPublished{Manifest: string(sm.Envelope)}); err != nil {
		t.Fatal(err)
	}
	t.Logf("published %s: %d samples in %d shards", sm.Digest, sm.Samples, len(sm.Shards))
	// The auditor scans the published data for real and attests it.
	scanFormat := scan.FormatText
	if format == dspub.FormatInstruct {
		scanFormat = scan.FormatJSONL
	}
	att := scanAttest(t, ctx, n, lc, sm.Digest, "arith", n.Shards[1], scanFormat)

	// A job on it that accepts only MIT is refused.
	var job map[string]any
	readYAML(t, n.JobFile, &job)
	job["datasets"] = map[string]any{"published": []string{sm.Digest}, "range_samples": 8, "licenses": []string{"MIT"}}
	job["name"] = "published-mit"
	if err := writeYAML(n.JobFile, job); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Launch(ctx); err == nil || !strings.Contains(err.Error(), `licence "CC-BY-4.0"`) || !strings.Contains(err.Error(), "does not accept") {
		t.Fatalf("a job accepting only MIT on CC-BY-4.0 data: %v", err)
	} else {
		t.Logf("refused: %v", err)
	}

	// The job accepting CC0-1.0 (trainer-1's own data) and CC-BY-4.0 runs.
	job["datasets"] = map[string]any{"published": []string{sm.Digest}, "range_samples": 8, "licenses": []string{"CC0-1.0", "CC-BY-4.0"}}
	job["name"] = "published"
	if err := writeYAML(n.JobFile, job); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 1 {
		t.Fatalf("job ended %s (%s) with %d rounds, want done with 1", st.State, st.Detail, len(st.Rounds))
	}
	r, err := lc.Round(ctx, "published", 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != ledger.StatusCommitted || len(r.Ranges) != 2 {
		t.Fatalf("round 1: %s with %d ranges", r.Status, len(r.Ranges))
	}
	t2 := n.ID("trainer-2")
	var got *ledger.Update
	for i := range r.Updates {
		if r.Updates[i].Trainer == t2 {
			got = &r.Updates[i]
		}
	}
	want := ledger.RangesOf(r.Ranges, t2)
	if got == nil || got.Rejected || got.DatasetDigest != sm.Digest || len(got.Ranges) != 1 || got.Ranges[0] != want[0] {
		t.Fatalf("trainer-2's update %+v; want one on %s over %+v", got, sm.Digest, want)
	}
	if !contributes(r, t2) {
		t.Fatalf("trainer-2 is not a contributor of %+v", r.Contributors)
	}
	js, err := lc.Query(ctx, 5 /* QUERY_KIND_LINEAGE */, r.ModelDigest, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.DecodeLineage(js)
	if err != nil {
		t.Fatal(err)
	}
	// Every fact of the lineage, the published dataset's record included,
	// is the one its signed tx gives, in a block two nodes cosigned.
	g, err := ledger.LoadGenesis(n.GenesisPath())
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, gn := range g.Nodes {
		nodes = append(nodes, ledger.KeyID(gn.Key))
	}
	if _, err := audit.Anchor(ctx, lc, l, audit.AnchorOptions{Quorum: 2, Model: r.ModelDigest, ChainID: g.ChainID, Nodes: nodes}); err != nil {
		t.Fatalf("anchoring the lineage: %v", err)
	}
	// trainer-1 mixed its own data with its published range: its
	// contribution names both datasets, and so do the lineage's datasets.
	t1 := n.ID("trainer-1")
	var own string
	for _, lr := range l.Rounds {
		for _, c := range lr.Contributors {
			if c.Trainer == t1 {
				own = c.DatasetDigest
				if c.DatasetDigest == sm.Digest || !slices.Equal(c.Published, []string{sm.Digest}) {
					t.Fatalf("trainer-1's contribution %+v; want its own dataset and published %s", c, sm.Digest)
				}
			}
		}
	}
	var lds []string
	for _, ld := range l.Datasets {
		lds = append(lds, ld.Digest)
	}
	if own == "" || !slices.Contains(lds, own) || !slices.Contains(lds, sm.Digest) {
		t.Fatalf("lineage datasets %v; want trainer-1's own %q and the published %s", lds, own, sm.Digest)
	}
	rep := audit.Licences(l, nil)
	var ids []string
	for _, lt := range rep.Licences {
		ids = append(ids, lt.ID)
	}
	if !strings.Contains(strings.Join(ids, " "), "CC-BY-4.0") {
		t.Fatalf("licences behind the model: %v, want CC-BY-4.0 among them", ids)
	}

	// The model's provenance, in every format, validates against its
	// schema and carries the published dataset (its signed manifest's
	// digest, its shards, its card, its licence's obligations) and the
	// auditor's attestation of it.
	p, err := audit.ProvenanceFromNode(ctx, lc, l, g.ChainID, 2)
	if err != nil {
		t.Fatal(err)
	}
	carry := []string{own, sm.Digest, sm.Card, att.Report, att.Tool.Digest, "attribution: credit the authors", n.ID(AuditorName)}
	for _, sh := range sm.Shards {
		carry = append(carry, sh.Digest)
	}
	for _, f := range audit.ProvenanceFormats {
		var b bytes.Buffer
		if err := audit.WriteProvenance(&b, p, f, n.Keys[AuditorName]); err != nil {
			t.Fatalf("%s provenance: %v", f, err)
		}
		if err := provenancetest.Validate(f, b.Bytes()); err != nil {
			t.Errorf("%s provenance of a model on attested, published data: %v", f, err)
		}
		text := b.Bytes()
		if f == "in-toto" {
			env, err := dsse.Decode(bytes.TrimSpace(text))
			if err != nil {
				t.Fatal(err)
			}
			text = env.Payload
		}
		for _, w := range carry {
			if !bytes.Contains(text, []byte(w)) {
				t.Errorf("%s provenance does not carry %q", f, w)
			}
		}
	}

	// The coordinator's store is edited: a member fetching the dataset
	// is refused, with the shard and sample named.
	path := publishedBlob(t, n, sm.Shards[1].Digest)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	texts, err := dspub.DecodeShard(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(texts) < 6 {
		t.Fatalf("shard 1 holds %d samples", len(texts))
	}
	texts[5] = strings.Replace(texts[5], "A:", "A: not", 1)
	os.Chmod(path, 0o644)
	if err := os.WriteFile(path, dspub.EncodeShard(texts), 0o644); err != nil {
		t.Fatal(err)
	}
	err = trainer.FetchPublished(ctx, publishedArtifacts(t, n, n.Keys["trainer-2"]), sm, filepath.Join(t.TempDir(), "fetched"))
	var se *dspub.ShardError
	if !errors.As(err, &se) || se.Shard != 1 || se.Sample != sm.Shards[1].First+5 {
		t.Fatalf("fetch of an edited shard: %v; want shard 1, sample %d", err, sm.Shards[1].First+5)
	}
	t.Logf("refused: %v", err)
}

func contributes(r *ledger.Round, id string) bool {
	for _, c := range r.Contributors {
		if c.Trainer == id {
			return true
		}
	}
	return false
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

// publishedArtifacts dials the coordinator's artifact service as key.
func publishedArtifacts(t *testing.T, n *Net, key ed25519.PrivateKey) *artifact.Client {
	t.Helper()
	opt, err := tlsid.DialOption(key, tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		t.Fatal(err)
	}
	c, err := artifact.Dial(n.Coordinator, opt)
	if err != nil {
		t.Fatal(err)
	}
	c.Retries = 0
	t.Cleanup(func() { c.Close() })
	return c
}

// publishedBlob finds blob digest in the coordinator's store.
func publishedBlob(t *testing.T, n *Net, digest string) string {
	t.Helper()
	var found string
	filepath.WalkDir(n.path("coordinator"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(p) == digest && filepath.Base(filepath.Dir(filepath.Dir(p))) == "blobs" {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("blob %s is not in the coordinator's store under %s", digest, n.path("coordinator"))
	}
	return found
}
