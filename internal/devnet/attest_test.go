package devnet

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets/scan"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// TestNetworkRequiredAttestation: a job that requires a pii-scan by the
// devnet's auditor refuses the trainer's dataset while it has none (the
// update is rejected on the ledger with the reason, the round fails); the
// auditor scans the trainer's shard for real and records DatasetAttested;
// the same job launched again commits, and the model's lineage shows the
// dataset's attestation and nothing missing.
func TestNetworkRequiredAttestation(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n := prepare(t, ctx, Options{JobName: "attest-1", Trainers: 1, Rounds: 1, LocalSteps: 3, MinTrainers: 1, PretrainSteps: 2,
		EvalData: "datasets/testdata/shards/trainer-1.jsonl"})
	auditor := n.ID(AuditorName)
	require := "require_attestations:\n  - {kind: pii-scan, by: " + auditor + "}\n"
	job, err := os.ReadFile(n.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.JobFile, append(job, require...), 0o644); err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()

	// Without the attestation: refused.
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rounds) != 1 || st.Rounds[0].Status != string(ledger.StatusFailed) || len(st.Rounds[0].Updates) != 1 {
		t.Fatalf("job attest-1 ended %s (%s), rounds %v; want round 1 failed with one update", st.State, st.Detail, st.Rounds)
	}
	u := st.Rounds[0].Updates[0]
	dataset := u.DatasetDigest
	if !strings.Contains(st.Rounds[0].FailReason, "dataset "+dataset+", which lacks the passing attestation(s) job attest-1 requires: pii-scan by "+auditor) {
		t.Fatalf("round 1 failed for %q; want the missing pii-scan of dataset %s named", st.Rounds[0].FailReason, dataset)
	}
	t.Logf("without the attestation: %s", st.Rounds[0].FailReason)

	// The auditor scans the trainer's data and attests its manifest.
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	p := scanAttest(t, ctx, n, lc, dataset, "trainer-1", filepath.Join("..", "..", "datasets", "testdata", "shards", "trainer-1.jsonl"), scan.FormatJSONL)

	// With it: the same job, launched again, commits.
	// Another name and seed: the same seed would train the very same update,
	// whose digest round 1 of attest-1 already holds.
	second := filepath.Join(filepath.Dir(n.JobFile), "job-2.yaml")
	job2 := regexp.MustCompile(`(?m)^seed: [0-9]+$`).ReplaceAllString(strings.Replace(string(job), "name: attest-1", "name: attest-2", 1), "seed: 4242")
	if !strings.Contains(job2, "seed: 4242") {
		t.Fatalf("job file has no seed line:\n%s", job)
	}
	if err := os.WriteFile(second, []byte(job2+require), 0o644); err != nil {
		t.Fatal(err)
	}
	if j, err := coordinator.LoadJob(second); err != nil || j.Name != "attest-2" {
		t.Fatalf("second job: %v %+v", err, j)
	}
	n.JobFile, n.JobName = second, "attest-2"
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 1 || st.Rounds[0].Status != string(ledger.StatusCommitted) || st.Rounds[0].Updates[0].Rejected {
		t.Fatalf("job attest-2 ended %s (%s), rounds %v; want round 1 committed", st.State, st.Detail, st.Rounds)
	}
	l, err := n.Lineage(ctx, st.Rounds[0].ModelDigest)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Datasets) != 1 || l.Datasets[0].Digest != dataset || len(l.Datasets[0].Attestations) != 1 ||
		l.Datasets[0].Attestations[0].Auditor != auditor || len(l.Missing) != 0 {
		t.Fatalf("lineage datasets %+v missing %+v", l.Datasets, l.Missing)
	}
	// Every fact of it, attestations included, anchors in blocks cosigned
	// by two of the three nodes.
	rep, err := audit.Anchor(ctx, lc, l, audit.AnchorOptions{Quorum: 2, ChainID: n.ChainID, Model: st.Rounds[0].ModelDigest})
	if err != nil {
		t.Fatalf("anchor the lineage: %v", err)
	}
	if len(rep.Lineage.Datasets) != 1 || len(rep.Lineage.Datasets[0].Attestations) != 1 {
		t.Fatalf("anchored lineage datasets %+v", rep.Lineage.Datasets)
	}

	// The auditor later finds the data fails the scan: the lineage says the
	// data behind the model now lacks what its job required, anchored too.
	fail := p
	fail.Result = ledger.AttestationResult{Pass: false, Samples: p.Result.Samples, Findings: 1, Counts: map[string]uint64{"email": 1}}
	fenv, err := ledger.SignStatement(n.Keys[AuditorName], ledger.NewStatement(dataset, "trainer-1", fail))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewSigner(lc, n.Keys[AuditorName]).Submit(ctx, ledger.DatasetAttested{Dataset: dataset, Predicate: fail, Statement: fenv}); err != nil {
		t.Fatal(err)
	}
	var l2 *ledger.Lineage
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if l2, err = n.Lineage(ctx, st.Rounds[0].ModelDigest); err != nil {
			t.Fatal(err)
		}
		if len(l2.Missing) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(l2.Missing) != 1 || l2.Missing[0].Dataset != dataset || l2.Missing[0].JobID != "attest-2" {
		t.Fatalf("lineage after a failing scan: missing %+v", l2.Missing)
	}
	rep2, err := audit.Anchor(ctx, lc, l2, audit.AnchorOptions{Quorum: 2, ChainID: n.ChainID, Model: st.Rounds[0].ModelDigest})
	if err != nil {
		t.Fatalf("anchor the lineage with a missing attestation: %v", err)
	}
	var table strings.Builder
	if err := audit.Render(&table, audit.NewGraph(rep2.Lineage, nil), "table"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "MISSING: round 1 of job attest-2 used dataset "+dataset[:12]+", which lacks the attestation its job requires: pii-scan by "+auditor) {
		t.Fatalf("lineage table:\n%s", table.String())
	}
	t.Logf("after a failing scan, audit lineage says:\n%s", table.String())
	t.Logf("with the attestation: round committed model %s; dataset %s attested by %s (%d samples scanned, 0 findings)",
		st.Rounds[0].ModelDigest[:12], dataset[:12], auditor[:12], p.Result.Samples)
}

// scanAttest scans file (format f) for personal data for real, as the
// devnet's auditor, and records the passing result as a DatasetAttested of
// dataset (statement subject name), failing t if the data has findings.
func scanAttest(t *testing.T, ctx context.Context, n *Net, lc *client.Client, dataset, name, file string, f scan.Format) ledger.AttestationPredicate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := scan.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sc.Scan(filepath.Base(file), data, f)
	if err != nil {
		t.Fatal(err)
	}
	report, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for k, v := range res.Counts() {
		counts[string(k)] = uint64(v)
	}
	exe, _ := os.Executable()
	tool, err := digest.File(exe)
	if err != nil {
		t.Fatal(err)
	}
	p := ledger.AttestationPredicate{Kind: ledger.KindPIIScan, Tool: ledger.AttestationTool{Name: "fedtune dataset scan", Digest: tool},
		Report: digest.Bytes(report), Result: ledger.AttestationResult{Pass: len(res.Findings) == 0, Samples: uint64(res.Samples),
			Findings: uint64(len(res.Findings)), Counts: counts}}
	if !p.Result.Pass {
		t.Fatalf("the shipped data %s has personal data: %v", file, res.Findings)
	}
	env, err := ledger.SignStatement(n.Keys[AuditorName], ledger.NewStatement(dataset, name, p))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewSigner(lc, n.Keys[AuditorName]).Submit(ctx, ledger.DatasetAttested{Dataset: dataset, Predicate: p, Statement: env}); err != nil {
		t.Fatal(err)
	}
	return p
}
