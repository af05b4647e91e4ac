package adversarial

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

// publishedStore serves a fresh artifact store on loopback (plain text:
// what is checked here is the data, not the channel).
func publishedStore(t *testing.T) (*artifact.Client, *artifact.Store) {
	t.Helper()
	st, err := artifact.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
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
	return c, st
}

// publishedCorrupt edits sample j of the shard file at path in place, as
// an artifact store's operator could.
func publishedCorrupt(t *testing.T, path string, j int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	texts, err := dspub.DecodeShard(b)
	if err != nil {
		t.Fatal(err)
	}
	texts[j] += " (edited)"
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, dspub.EncodeShard(texts), 0o644); err != nil {
		t.Fatal(err)
	}
}

// publishedData is a small text dataset of n lines.
func publishedData(tag string, n int) *datasets.Dataset {
	d := &datasets.Dataset{Name: tag}
	for i := range n {
		d.Samples = append(d.Samples, datasets.Sample{ID: fmt.Sprint(i), Text: fmt.Sprintf("%s line %d", tag, i)})
	}
	return d
}

// publishedRejected submits env through c and requires the ledger to
// refuse it with code, saying want.
func publishedRejected(t *testing.T, ctx context.Context, c *client.Client, env []byte, code ledger.Code, want string) {
	t.Helper()
	_, err := c.SubmitWait(ctx, env)
	var te *ledger.TxError
	if !errors.As(err, &te) || te.Code != code || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v; want a %v rejection saying %q", err, code, want)
	}
	t.Logf("refused: %v", err)
}

// publishedTx signs a DatasetPublished carrying manifest bytes env with
// key at nonce, bypassing SignTx's checks (a liar's tool would).
func publishedTx(t *testing.T, key ed25519.PrivateKey, chainID string, nonce uint64, env []byte) []byte {
	t.Helper()
	body, err := json.Marshal(ledger.DatasetPublished{Manifest: string(env)})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(map[string]any{"chain_id": chainID, "signer": ledger.KeyID(key.Public().(ed25519.PublicKey)), "nonce": nonce,
		"type": ledger.TypeDatasetPublished, "body": json.RawMessage(body)})
	if err != nil {
		t.Fatal(err)
	}
	return ledger.SignEnvelope(key, ledger.PayloadType, payload).Encode()
}

// Lies about published data: a manifest forged in another member's name, a
// manifest whose signature does not verify, a malformed one, publishing as
// a stranger, a second dataset under a taken name. The ledger refuses each
// and its chain is unchanged; an honest publication goes through. Then the
// data plane: a manifest whose root its leaves do not give, and a shard
// edited in the store, are refused by the fetcher, which names the shard
// and the sample.
func TestAttackPublishedData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ac, st := publishedStore(t)
	k1, k2 := nw.Keys["trainer-1"], nw.Keys["trainer-2"]
	s1, s2 := client.NewSigner(c, k1), client.NewSigner(c, k2)

	honest, err := trainer.PublishDataset(ctx, ac, k1, publishedData("honest", 30), nil,
		datasets.PublishOptions{Name: "honest-set", Format: dspub.FormatText, Licence: "CC-BY-4.0", ShardSamples: 8})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Submit(ctx, ledger.DatasetPublished{Manifest: string(honest.Envelope)}); err != nil {
		t.Fatal(err)
	}
	before := waitSettled(t, ctx, nw.Net)

	// trainer-2 re-signs trainer-1's manifest with its own key but keeps
	// trainer-1's key ID, and publishes it as trainer-2; then as itself.
	env, _ := dsse.Decode(honest.Envelope)
	forged := dsse.Sign(k2, dspub.PayloadType, env.Payload)
	forged.Signatures[0].KeyID = nw.ID("trainer-1")
	n2 := uint64(1)
	publishedRejected(t, ctx, c, publishedTx(t, k2, nw.ChainID, n2, forged.Encode()), ledger.CodeForbidden, "may not publish it")
	// ... and a manifest naming trainer-2 as owner, signed by trainer-1's key.
	var m dspub.Manifest
	if err := json.Unmarshal(env.Payload, &m); err != nil {
		t.Fatal(err)
	}
	m.Owner, m.Name = nw.ID("trainer-2"), "stolen-set"
	payload, _ := json.Marshal(m)
	stolen := dsse.Sign(k1, dspub.PayloadType, payload)
	stolen.Signatures[0].KeyID = nw.ID("trainer-2")
	publishedRejected(t, ctx, c, publishedTx(t, k2, nw.ChainID, n2, stolen.Encode()), ledger.CodeBadSignature, "manifest signature does not verify")
	// A manifest whose shards overlap is malformed, whoever signs it.
	m.Shards[1].First--
	payload, _ = json.Marshal(m)
	bad := dsse.Sign(k2, dspub.PayloadType, payload).Encode()
	publishedRejected(t, ctx, c, publishedTx(t, k2, nw.ChainID, n2, bad), ledger.CodeInvalid, "shards[1].first")
	// A stranger publishes.
	stranger := newKey(t)
	sp, err := trainer.PublishDataset(ctx, ac, stranger, publishedData("stranger", 5), nil,
		datasets.PublishOptions{Name: "stranger-set", Format: dspub.FormatText, Licence: "MIT"})
	if err != nil {
		t.Fatal(err)
	}
	publishedRejected(t, ctx, c, publishedTx(t, stranger, nw.ChainID, 1, sp.Envelope), ledger.CodeUnknownSigner, "not a member")
	// trainer-2 publishes other data under the taken name.
	dup, err := trainer.PublishDataset(ctx, ac, k2, publishedData("other", 5), nil,
		datasets.PublishOptions{Name: "honest-set", Format: dspub.FormatText, Licence: "MIT"})
	if err != nil {
		t.Fatal(err)
	}
	publishedRejected(t, ctx, c, publishedTx(t, k2, nw.ChainID, n2, dup.Envelope), ledger.CodeAlreadyExists, `named "honest-set" is already published`)
	requireUnchanged(t, ctx, nw.Net, before)

	// Data plane. A manifest whose root is not its leaves' (the publisher
	// lies about the root; the ledger cannot see the data) is recorded,
	// and refused by every fetcher.
	p, err := datasets.Publish(publishedData("rootlie", 12), datasets.PublishOptions{Name: "root-lie", Format: dspub.FormatText, Licence: "MIT",
		Owner: nw.ID("trainer-2"), ShardSamples: 4})
	if err != nil {
		t.Fatal(err)
	}
	p.Manifest.Root = digestOf("a root of other data")
	for _, b := range append([][]byte{p.Leaves}, p.Shards...) {
		if _, err := ac.Upload(ctx, artifact.DigestOf(b), strings.NewReader(string(b)), int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	lie, err := dspub.Sign(k2, &p.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Submit(ctx, ledger.DatasetPublished{Manifest: string(lie.Envelope)}); err != nil {
		t.Fatal(err)
	}
	rec, err := c.Dataset(ctx, lie.Digest)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := trainer.PublishedManifest(rec, k2.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := trainer.FetchPublished(ctx, ac, sm, t.TempDir()+"/out"); !errors.Is(err, dspub.ErrLeaves) || !strings.Contains(err.Error(), "the leaves give root") {
		t.Fatalf("fetch of a manifest with a wrong root: %v", err)
	}

	// The store's operator edits sample 2 of shard 1 of the honest set.
	path, err := st.Path(honest.Shards[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	publishedCorrupt(t, path, 2)
	err = trainer.FetchPublished(ctx, ac, honest, t.TempDir()+"/out")
	var se *dspub.ShardError
	if !errors.As(err, &se) || se.Shard != 1 || se.Sample != 10 || !strings.Contains(err.Error(), "shard 1 ("+honest.Shards[1].Digest+"): sample 10") {
		t.Fatalf("fetch of an edited shard: %v; want shard 1 sample 10 named", err)
	}
	t.Logf("refused: %v", err)
}

// A job accepts MIT and Apache-2.0 data; trainer-2 trains on CC-BY-NC-4.0
// data. The designated aggregator counts its update anyway: the ledger
// refuses the commit, naming the contributor, the dataset and its
// licence; rejecting the update with the reason (which the ledger then
// records) and committing the rest goes through.
func TestAttackLicenceCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sig, must := submitters(t, ctx, nw, c)
	base := digestOf("licence base")
	must("coordinator", ledger.ModelRegistered{Digest: base, Name: "base", Licence: "Apache-2.0", Source: "test"})
	ds := map[string]string{"trainer-1": digestOf("mit data"), "trainer-2": digestOf("nc data")}
	must("trainer-1", ledger.DatasetRegistered{Digest: ds["trainer-1"], Name: "mit-data", Licence: "MIT", Source: "test", Samples: 10, Root: digestOf("r1")})
	must("trainer-2", ledger.DatasetRegistered{Digest: ds["trainer-2"], Name: "nc-data", Licence: "CC-BY-NC-4.0", Source: "test", Samples: 10, Root: digestOf("r2")})
	rc := ledger.RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{nw.ID("aggregator")}, BaseModel: base,
		Licences: []string{"MIT", "Apache-2.0"}}
	must("coordinator", ledger.JobRegistered{JobID: "lic", Recipe: rc})
	must("coordinator", ledger.RoundOpened{JobID: "lic", Round: 1, ConfigDigest: digestOf("cfg"), BaseModel: base, Strategy: "fedavg",
		Trainers: []string{nw.ID("trainer-1"), nw.ID("trainer-2")}, Deadline: time.Now().Add(time.Hour)})
	for _, tr := range []string{"trainer-1", "trainer-2"} {
		must(tr, ledger.UpdateSubmitted{JobID: "lic", Round: 1, UpdateDigest: digestOf("update of " + tr), DatasetDigest: ds[tr], Samples: 5})
	}
	both := ledger.RoundCommitted{JobID: "lic", Round: 1, ModelDigest: digestOf("new model"), Strategy: "fedavg", Params: rc.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: nw.ID("trainer-1"), UpdateDigest: digestOf("update of trainer-1"), Weight: 0.5},
			{Trainer: nw.ID("trainer-2"), UpdateDigest: digestOf("update of trainer-2"), Weight: 0.5}}}
	before := waitSettled(t, ctx, nw.Net)
	_, err = sig["aggregator"].Submit(ctx, both)
	if err == nil || !strings.Contains(err.Error(), `contributors[1]`) || !strings.Contains(err.Error(), `licence "CC-BY-NC-4.0"`) {
		t.Fatalf("commit counting a CC-BY-NC update: %v", err)
	}
	t.Logf("refused: %v", err)
	requireUnchanged(t, ctx, nw.Net, before)
	reason := rc.LicenceRefusal(ds["trainer-2"], "nc-data", "CC-BY-NC-4.0")
	must("aggregator", ledger.UpdateRejected{JobID: "lic", Round: 1, UpdateDigest: digestOf("update of trainer-2"), Reason: reason})
	both.Contributors = both.Contributors[:1]
	both.Contributors[0].Weight = 1
	must("aggregator", both)
	r, err := c.Round(ctx, "lic", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range r.Updates {
		if u.Trainer == nw.ID("trainer-2") && (!u.Rejected || !strings.Contains(u.RejectReason, "CC-BY-NC-4.0")) {
			t.Fatalf("the ledger records trainer-2's update as %+v", u)
		}
	}
}

// Lies about the sample ranges of a job on published data: a coordinator
// opening a round with ranges other than the job seed gives (two
// trainers on overlapping samples), and trainers naming ranges they were
// not given (another's, an overlapping one, none, a made-up one) in
// UpdateSubmitted. The ledger refuses each and its chain is unchanged; the
// honest round and update go through.
func TestAttackPublishedRanges(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ac, _ := publishedStore(t)
	sig, must := submitters(t, ctx, nw, c)
	refused := func(who string, body ledger.TxBody, want string) {
		t.Helper()
		_, err := sig[who].Submit(ctx, body)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s by %s: %v; want a refusal saying %q", body.TxType(), who, err, want)
		}
		t.Logf("refused: %v", err)
	}
	sm, err := trainer.PublishDataset(ctx, ac, nw.Keys["trainer-1"], publishedData("ranges", 40), nil,
		datasets.PublishOptions{Name: "ranges-set", Format: dspub.FormatText, Licence: "CC0-1.0", ShardSamples: 8})
	if err != nil {
		t.Fatal(err)
	}
	must("trainer-1", ledger.DatasetPublished{Manifest: string(sm.Envelope)})
	base := digestOf("ranges base")
	must("coordinator", ledger.ModelRegistered{Digest: base, Name: "base", Licence: "Apache-2.0", Source: "test"})
	rc := ledger.RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{nw.ID("aggregator")}, BaseModel: base,
		Published: []ledger.PublishedRef{{Digest: sm.Digest, Samples: sm.Samples}}, RangeSeed: 11, RangeSamples: 5}
	must("coordinator", ledger.JobRegistered{JobID: "ranges", Recipe: rc})
	trainers := []string{nw.ID("trainer-2"), nw.ID("trainer-3")}
	want, err := rc.Ranges(1, trainers)
	if err != nil {
		t.Fatal(err)
	}
	open := ledger.RoundOpened{JobID: "ranges", Round: 1, ConfigDigest: digestOf("cfg"), BaseModel: base, Strategy: "fedavg",
		Trainers: trainers, Deadline: time.Now().Add(time.Hour), Ranges: want}
	before := waitSettled(t, ctx, nw.Net)
	overlap := open
	overlap.Ranges = []ledger.TrainerRange{want[0], want[1]}
	overlap.Ranges[1].First, overlap.Ranges[1].End = want[0].First+1, want[0].End+1
	refused("coordinator", overlap, "the recipe's seed gives")
	none := open
	none.Ranges = nil
	refused("coordinator", none, "gives 0 sample ranges")
	requireUnchanged(t, ctx, nw.Net, before)
	must("coordinator", open)

	mine, theirs := ledger.RangesOf(want, trainers[0]), ledger.RangesOf(want, trainers[1])
	sub := func(rs []ledger.SampleRange, samples uint64) ledger.UpdateSubmitted {
		return ledger.UpdateSubmitted{JobID: "ranges", Round: 1, UpdateDigest: digestOf("ranges update"), DatasetDigest: sm.Digest, Samples: samples, Ranges: rs}
	}
	before = waitSettled(t, ctx, nw.Net)
	refused("trainer-2", sub(theirs, 5), "assigned trainer")
	refused("trainer-2", sub([]ledger.SampleRange{{Dataset: sm.Digest, First: mine[0].First, End: mine[0].End + 3}}, 5), "assigned trainer")
	refused("trainer-2", sub([]ledger.SampleRange{{Dataset: sm.Digest, First: 0, End: 40}}, 40), "assigned trainer")
	refused("trainer-2", sub(nil, 5), "names 0 sample ranges")
	refused("trainer-2", sub(mine, 6), "more than the 5 published samples")
	// A trainer not selected for the round claims a range.
	refused("trainer-1", sub(mine, 5), "not selected")
	requireUnchanged(t, ctx, nw.Net, before)
	must("trainer-2", sub(mine, 5))
}

// An update on data under a licence the job does not accept is rejected
// with the licence's reason: audit verify of the export confirms it from
// the ledger's records alone. The same reason given for data the job does
// accept is a lie, and the audit names it.
func TestAttackLicenceRejectionAudited(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rejectionsNet{nw: nw, c: c, signers: map[string]*client.Signer{}, artifacts: t.TempDir(), datasets: map[string]string{}}
	for name, key := range nw.Keys {
		r.signers[name] = client.NewSigner(c, key)
	}
	r.base = r.file(t, 0, false)
	r.must(t, ctx, "coordinator", ledger.ModelRegistered{Digest: r.base, Name: "base", Licence: "CC0-1.0", Source: "test"})
	lic := map[string]string{"trainer-1": "MIT", "trainer-2": "CC-BY-NC-4.0"}
	for _, tr := range []string{"trainer-1", "trainer-2"} {
		d := digestOf("licence audit: dataset of " + tr)
		r.datasets[tr] = d
		r.must(t, ctx, tr, ledger.DatasetRegistered{Digest: d, Name: tr + "-data", Licence: lic[tr], Source: "test",
			Samples: roundsSamples, Root: digestOf("root of " + tr), Bytes: 1000})
	}
	run := func(job string, accepted []string) {
		rc := ledger.RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{nw.ID("aggregator")}, BaseModel: r.base,
			Licences: accepted}
		r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: job, Recipe: rc})
		r.must(t, ctx, "coordinator", ledger.RoundOpened{JobID: job, Round: 1, ConfigDigest: digestOf("config of " + job), BaseModel: r.base,
			Strategy: "fedavg", Trainers: []string{nw.ID("trainer-1"), nw.ID("trainer-2")}, Deadline: time.Now().Add(time.Hour)})
		good, bad := r.file(t, float32(len(job))+0.5, false), r.file(t, float32(len(job)), false)
		r.must(t, ctx, "trainer-1", ledger.UpdateSubmitted{JobID: job, Round: 1, UpdateDigest: good, DatasetDigest: r.datasets["trainer-1"], Samples: roundsSamples})
		r.must(t, ctx, "trainer-2", ledger.UpdateSubmitted{JobID: job, Round: 1, UpdateDigest: bad, DatasetDigest: r.datasets["trainer-2"], Samples: roundsSamples})
		reason := rc.LicenceRefusal(r.datasets["trainer-2"], "trainer-2-data", "CC-BY-NC-4.0")
		r.must(t, ctx, "aggregator", ledger.UpdateRejected{JobID: job, Round: 1, UpdateDigest: bad, Reason: reason})
		out := filepath.Join(t.TempDir(), "model.safetensors")
		res, err := aggregator.Aggregate(ctx, aggregator.Request{Strategy: &aggregator.FedAvg{}, Base: filepath.Join(r.artifacts, r.base), Out: out,
			Inputs:  []aggregator.Input{{Path: filepath.Join(r.artifacts, good), Weight: roundsSamples, ContributorID: nw.ID("trainer-1")}},
			Options: aggregator.Options{Strict: true}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(out, filepath.Join(r.artifacts, res.Digest)); err != nil {
			t.Fatal(err)
		}
		r.must(t, ctx, "aggregator", ledger.RoundCommitted{JobID: job, Round: 1, ModelDigest: res.Digest, Strategy: "fedavg",
			Contributors: []ledger.Contribution{{Trainer: nw.ID("trainer-1"), UpdateDigest: good, Weight: 1}}})
	}
	run("licence-honest", []string{"MIT"})
	rep, err := r.verify(t, ctx)
	if err != nil || rep.RejectionsChecked != 1 {
		t.Fatalf("verify with a licence rejection: %+v %v, want it confirmed", rep, err)
	}
	// The job accepts CC-BY-NC-4.0, yet the aggregator cites the licence.
	run("licence-lie", []string{"MIT", "CC-BY-NC-4.0"})
	_, err = r.verify(t, ctx)
	var m *audit.Mismatch
	if !errors.As(err, &m) || m.Field != "reason" || !strings.Contains(m.Msg, `accepts licence "CC-BY-NC-4.0"`) {
		t.Fatalf("verify with a lying licence rejection: %v", err)
	}
	t.Logf("audit: %v", err)
}
