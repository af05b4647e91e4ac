package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// TestLineageAttestations: the lineage's datasets carry their
// attestations and the lineage what its jobs required and the data lacks;
// the table and JSON show both, and a lineage without them renders as
// before (the golden files).
func TestLineageAttestations(t *testing.T) {
	g, c := fixedGraph(t)
	if g.Attestations != nil || g.Missing != nil {
		t.Fatalf("the test chain has no attestations, the graph shows %v %v", g.Attestations, g.Missing)
	}
	l, err := c.fsm.Lineage(c.models[1])
	if err != nil {
		t.Fatal(err)
	}
	d0, d1 := l.Datasets[0].Digest, l.Datasets[1].Digest
	l.Datasets[0].Attestations = []ledger.DatasetAttestation{{Dataset: d0, Kind: ledger.KindPIIScan, Auditor: strings.Repeat("a", 64),
		Result: ledger.AttestationResult{Pass: true, Samples: 12}, Tool: ledger.AttestationTool{Name: "fedtune dataset scan", Digest: strings.Repeat("b", 64)},
		Report: strings.Repeat("c", 64), Height: 9}}
	l.Missing = []ledger.MissingAttestation{{JobID: "job-x", Round: 2, Dataset: d1, Requirement: ledger.AttestationRequirement{Kind: ledger.KindPIIScan, By: "auditor"}}}
	raw, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := DecodeLineage(raw)
	if err != nil {
		t.Fatal(err)
	}
	g = NewGraph(l2, nil)
	var b bytes.Buffer
	if err := Render(&b, g, "table"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"dataset " + d0[:12] + `: pii-scan pass by auditor aaaaaaaaaaaa (12 samples, 0 findings; tool "fedtune dataset scan" bbbbbbbbbbbb, report cccccccccccc, height 9)`,
		"MISSING: round 2 of job job-x used dataset " + d1[:12] + ", which lacks the attestation its job requires: pii-scan by auditor",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := Render(&b, g, "json"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"missing_attestations"`) || !strings.Contains(b.String(), `"report": "`+strings.Repeat("c", 64)) {
		t.Errorf("json lacks the attestations:\n%s", b.String())
	}
}
