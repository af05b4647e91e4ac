package adversarial

import (
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator/round"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/trainer"
)

// TestAttackMixedAttestation: a job requires a pii-scan by the auditor;
// trainer-2 mixes its own dataset, which the auditor attested, with the
// published ranges the job gives it, a dataset nobody attested. An
// aggregator committing that update (lineage would list the published
// dataset as missing its attestation) is refused, naming the published
// dataset, and the chain is unchanged; the honest aggregator rejects the
// update (UpdateRejected) with a reason naming that dataset.
func TestAttackMixedAttestation(t *testing.T) {
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
	ac, store := publishedStore(t)
	sig, must := submitters(t, ctx, nw, c)
	aud := devnet.AuditorName
	sm, err := trainer.PublishDataset(ctx, ac, nw.Keys["trainer-1"], publishedData("mixattest", 20), nil,
		datasets.PublishOptions{Name: "mixattest-set", Format: dspub.FormatText, Licence: "CC0-1.0", ShardSamples: 8})
	if err != nil {
		t.Fatal(err)
	}
	must("trainer-1", ledger.DatasetPublished{Manifest: string(sm.Envelope)})
	own := digestOf("trainer-2 own data")
	must("trainer-2", ledger.DatasetRegistered{Digest: own, Name: "own-data", Licence: "CC0-1.0", Source: "test", Samples: 10, Root: digestOf("own root")})
	must(aud, attestBody(t, nw.Keys[aud], own))
	base := digestOf("mixattest base")
	must("coordinator", ledger.ModelRegistered{Digest: base, Name: "base", Licence: "Apache-2.0", Source: "test"})
	rc := ledger.RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{nw.ID("aggregator")}, BaseModel: base,
		Published: []ledger.PublishedRef{{Digest: sm.Digest, Samples: sm.Samples}}, RangeSeed: 5, RangeSamples: 4,
		RequireAttestations: []ledger.AttestationRequirement{{Kind: ledger.KindPIIScan, By: nw.ID(aud)}}}
	must("coordinator", ledger.JobRegistered{JobID: "mixattest", Recipe: rc})
	tr := nw.ID("trainer-2")
	ranges, err := rc.Ranges(1, []string{tr})
	if err != nil {
		t.Fatal(err)
	}
	must("coordinator", ledger.RoundOpened{JobID: "mixattest", Round: 1, ConfigDigest: digestOf("cfg"), BaseModel: base, Strategy: "fedavg",
		Trainers: []string{tr}, Deadline: time.Now().Add(time.Hour), Ranges: ranges})
	ud, _, err := store.Put(ctx, strings.NewReader("trainer-2's mixed update"))
	if err != nil {
		t.Fatal(err)
	}
	upd := ledger.UpdateSubmitted{JobID: "mixattest", Round: 1, UpdateDigest: ud, DatasetDigest: own, Samples: 14,
		Ranges: ledger.RangesOf(ranges, tr)}
	must("trainer-2", upd)
	commit := ledger.RoundCommitted{JobID: "mixattest", Round: 1, ModelDigest: digestOf("mixattest model"), Strategy: "fedavg", Params: rc.CommitParams(),
		Contributors: []ledger.Contribution{{Trainer: tr, UpdateDigest: upd.UpdateDigest, Weight: 1}}}

	before := waitSettled(t, ctx, nw.Net)
	_, err = sig["aggregator"].Submit(ctx, commit)
	want := "computed on dataset " + sm.Digest + ", which lacks the attestation(s) job \"mixattest\" requires: pii-scan by " + nw.ID(aud)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("commit of a mixed update on an unattested published dataset: %v; want a refusal saying %q", err, want)
	}
	t.Logf("refused: %v", err)
	requireUnchanged(t, ctx, nw.Net, before)

	// The honest aggregator drops the update before aggregating, naming
	// the published dataset, and its UpdateRejected is recorded.
	agg := round.NewLocal(store, t.TempDir(), sig["aggregator"], nil)
	_, err = agg.Aggregate(ctx, round.Task{JobID: "mixattest", Round: 1, Base: base, Strategy: "fedavg",
		Inputs: []round.Input{{Trainer: tr, Digest: ud, Dataset: own, Samples: upd.Samples}}}, base)
	wantWhy := "update " + ud + " of trainer " + tr + " was computed on dataset " + sm.Digest + ", which lacks the passing attestation(s) job mixattest requires: pii-scan by " + nw.ID(aud)
	if err == nil || !strings.Contains(err.Error(), wantWhy) {
		t.Fatalf("aggregation of the mixed update: %v; want it rejected saying %q", err, wantWhy)
	}
	if _, err := agg.Submit(ctx, ledger.UpdateRejected{JobID: "mixattest", Round: 1, UpdateDigest: ud, Reason: wantWhy}); err != nil {
		t.Fatalf("the aggregator's own UpdateRejected: %v", err)
	}
	r, err := c.Round(ctx, "mixattest", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Updates) != 1 || !r.Updates[0].Rejected || !strings.Contains(r.Updates[0].RejectReason, sm.Digest) {
		t.Fatalf("round updates %+v; want the update rejected naming dataset %s", r.Updates, sm.Digest)
	}
}
