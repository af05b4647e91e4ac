package adversarial

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model/safetensors"
)

// rejectionsNet is a ledger-only devnet, its signers and a folder of
// artifacts (flat, named by digest) holding real safetensors files.
type rejectionsNet struct {
	nw        *devnet.Network
	c         *client.Client
	signers   map[string]*client.Signer
	artifacts string
	base      string
	datasets  map[string]string
	require   []ledger.AttestationRequirement // the jobs' required attestations
}

// newRejectionsNet starts three ledger nodes with a registered base model
// and a registered dataset for trainer-1 and trainer-2.
func newRejectionsNet(t *testing.T, ctx context.Context) *rejectionsNet {
	t.Helper()
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
	for _, tr := range []string{"trainer-1", "trainer-2"} {
		d := digestOf("rejections: dataset of " + tr)
		r.datasets[tr] = d
		r.must(t, ctx, tr, ledger.DatasetRegistered{Digest: d, Name: tr + "-data", Licence: "CC0-1.0", Source: "test",
			Samples: roundsSamples, Root: digestOf("root of " + tr), Bytes: 1000})
	}
	return r
}

// file writes a two-tensor model (v + i/8 at index i; a NaN at
// layer.bias[1] if nan) into the artifacts and returns its digest.
func (r *rejectionsNet) file(t *testing.T, v float32, nan bool) string {
	t.Helper()
	w, b := make([]float32, 6), make([]float32, 3)
	for i := range w {
		w[i] = v + float32(i)/8
	}
	for i := range b {
		b[i] = v - float32(i)/8
	}
	if nan {
		b[1] = float32(math.NaN())
	}
	tw, err := safetensors.FromFloat32("layer.weight", safetensors.F32, []int{2, 3}, w)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := safetensors.FromFloat32("layer.bias", safetensors.F32, []int{3}, b)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(r.artifacts, "tmp.safetensors")
	d, err := safetensors.WriteFile(tmp, []safetensors.Tensor{tw, tb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(r.artifacts, d)); err != nil {
		t.Fatal(err)
	}
	return d
}

func (r *rejectionsNet) must(t *testing.T, ctx context.Context, signer string, body ledger.TxBody) {
	t.Helper()
	if _, err := r.signers[signer].Submit(ctx, body); err != nil {
		t.Fatalf("%s by %s: %v", body.TxType(), signer, err)
	}
}

// round runs round 1 of a fedavg job: trainer-1 and trainer-2 submit the
// given updates, the aggregator rejects trainer-2's with reason and
// commits the fedavg of trainer-1's alone, computed for real.
func (r *rejectionsNet) round(t *testing.T, ctx context.Context, job, good, rejected, reason string) {
	t.Helper()
	r.must(t, ctx, "coordinator", ledger.JobRegistered{JobID: job, Recipe: ledger.RoundRecipe{Strategy: "fedavg", Compression: "none",
		MinTrainers: 1, Aggregators: []string{r.nw.ID("aggregator")}, BaseModel: r.base, RequireAttestations: r.require}})
	r.must(t, ctx, "coordinator", ledger.RoundOpened{JobID: job, Round: 1, ConfigDigest: digestOf("config of " + job), BaseModel: r.base,
		Strategy: "fedavg", Trainers: []string{r.nw.ID("trainer-1"), r.nw.ID("trainer-2")}, Deadline: time.Now().Add(time.Hour)})
	for tr, u := range map[string]string{"trainer-1": good, "trainer-2": rejected} {
		r.must(t, ctx, tr, ledger.UpdateSubmitted{JobID: job, Round: 1, UpdateDigest: u, DatasetDigest: r.datasets[tr], Samples: roundsSamples})
	}
	r.must(t, ctx, "aggregator", ledger.UpdateRejected{JobID: job, Round: 1, UpdateDigest: rejected, Reason: reason})
	out := filepath.Join(t.TempDir(), "model.safetensors")
	res, err := aggregator.Aggregate(ctx, aggregator.Request{Strategy: &aggregator.FedAvg{}, Base: filepath.Join(r.artifacts, r.base), Out: out,
		Inputs:  []aggregator.Input{{Path: filepath.Join(r.artifacts, good), Weight: roundsSamples, ContributorID: r.nw.ID("trainer-1")}},
		Options: aggregator.Options{Strict: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(out, filepath.Join(r.artifacts, res.Digest)); err != nil {
		t.Fatal(err)
	}
	r.must(t, ctx, "aggregator", ledger.RoundCommitted{JobID: job, Round: 1, ModelDigest: res.Digest, Strategy: "fedavg",
		Contributors: []ledger.Contribution{{Trainer: r.nw.ID("trainer-1"), UpdateDigest: good, Weight: 1}}})
}

// verify exports the chain from a node and verifies it with the artifacts.
func (r *rejectionsNet) verify(t *testing.T, ctx context.Context) (*audit.Report, error) {
	t.Helper()
	g, err := os.ReadFile(filepath.Join(r.nw.Dir, "genesis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "chain.fedtune")
	err = audit.WriteFileAtomic(path, 0o644, func(w io.Writer) error {
		ew, err := audit.NewExportWriter(w, g)
		if err != nil {
			return err
		}
		if err := r.c.Blocks(ctx, 0, false, func(vb *client.VerifiedBlock) error { return ew.WriteBlock(vb.Block) }); err != nil {
			return err
		}
		return ew.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, err := audit.ReadExport(f)
	if err != nil {
		t.Fatal(err)
	}
	return audit.Verify(ctx, e, audit.VerifyOptions{Artifacts: r.artifacts})
}

// The designated aggregator rejects an honest update ("element 1 is
// NaN", a lie) to leave it out of the round, and commits the rest. The
// ledger cannot see inside an update and records it all; audit verify of
// the export re-runs the aggregator's input checks on the rejected update
// and fails naming the job, round, trainer and update. A job whose
// rejected update really holds a NaN verifies, the rejection confirmed.
func TestAttackUnfoundedRejection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	r := newRejectionsNet(t, ctx)
	nw := r.nw
	const nanReason = `update: tensor "layer.bias": element 1 is NaN (every value must be finite)`

	// A real NaN, rightly rejected: the audit confirms it.
	r.round(t, ctx, "rejections-honest", r.file(t, 1, false), r.file(t, 2, true), nanReason)
	rep, err := r.verify(t, ctx)
	if err != nil || rep.RejectionsChecked != 1 {
		t.Fatalf("verify with a NaN update rejected: %+v %v, want it confirmed", rep, err)
	}

	// A good update rejected as NaN: the ledger accepts every tx ...
	honest := r.file(t, 4, false)
	r.round(t, ctx, "rejections-lie", r.file(t, 3, false), honest, nanReason)
	// ... and the audit names the lie.
	_, err = r.verify(t, ctx)
	var m *audit.Mismatch
	if !errors.As(err, &m) || m.Field != "reason" || !strings.Contains(m.Msg, `job "rejections-lie" round 1: update `+honest+" of trainer "+nw.ID("trainer-2")) ||
		!strings.Contains(m.Msg, "but it passes every input check") {
		t.Fatalf("verify with an honest update rejected: %v, want a reason mismatch naming the job, round, trainer and update", err)
	}
	t.Logf("audit: %v", err)
}

// TestAttackAttestationRejection: a job requires a pii-scan attestation
// by the devnet's auditor. trainer-1's dataset has one; trainer-2's has
// none, and the aggregator rightly rejects its good update for that: audit
// verify with the artifacts confirms the rejection from the ledger's
// records (it does not call it unfounded because the update's content is
// fine). Then trainer-2's dataset is attested, and an aggregator that
// rejects its next update for the same reason is named by the audit.
func TestAttackAttestationRejection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	r := newRejectionsNet(t, ctx)
	auditor := r.nw.ID("auditor")
	r.require = []ledger.AttestationRequirement{{Kind: ledger.KindPIIScan, By: auditor}}
	r.must(t, ctx, "auditor", attestBody(t, r.nw.Keys["auditor"], r.datasets["trainer-1"]))
	tr2 := r.nw.ID("trainer-2")

	rejected := r.file(t, 2, false)
	r.round(t, ctx, "attest-honest", r.file(t, 1, false), rejected,
		ledger.AttestationRefusal(rejected, tr2, r.datasets["trainer-2"], "attest-honest", r.require))
	rep, err := r.verify(t, ctx)
	if err != nil || rep.RejectionsChecked != 1 {
		t.Fatalf("verify with an update rightly rejected for a missing attestation: %+v %v, want it confirmed", rep, err)
	}

	r.must(t, ctx, "auditor", attestBody(t, r.nw.Keys["auditor"], r.datasets["trainer-2"]))
	lie := r.file(t, 4, false)
	r.round(t, ctx, "attest-lie", r.file(t, 3, false), lie,
		ledger.AttestationRefusal(lie, tr2, r.datasets["trainer-2"], "attest-lie", r.require))
	_, err = r.verify(t, ctx)
	var m *audit.Mismatch
	if !errors.As(err, &m) || m.Field != "reason" || !strings.Contains(m.Msg, `job "attest-lie" round 1: update `+lie) {
		t.Fatalf("verify with an attested dataset's update rejected as unattested: %v, want a reason mismatch naming the update", err)
	}
	t.Logf("audit: %v", err)
}
