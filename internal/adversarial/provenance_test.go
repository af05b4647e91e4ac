package adversarial

// A coordinator and a trainer that write hostile text into the records a
// provenance document is built from (names, licences, sources, a job ID):
// JSON that would close the string and add an element, an unbalanced
// licence expression, IRIs and blank-node IDs where a name belongs. The
// documents must stay valid against their schemas, carry the text as text,
// and read the broken licence as a LicenseRef, never as an expression.

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/audit/provenancetest"
	"github.com/fedtune/fedtune/ledger"
)

func TestAttackProvenanceHostileRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three ledger nodes")
	}
	ctx := testContext(t, 2*time.Minute)
	nw := startLedgers(t, ctx)
	c := exNewChain(t, ctx, nw)

	const (
		inject   = `x"},{"type":"Relationship","from":"urn:evil","relationshipType":"describes","to":["urn:evil"]},{"name":"`
		html     = `</script><!-- '"& <b>`
		badLic   = "MIT) OR (GPL-3.0"
		blank    = "_:creationinfo"
		job      = `job "x" <y>/z:1`
		jsSource = "javascript:alert(1)"
	)
	base, model, update := exDigest(t), exDigest(t), exDigest(t)
	c.commit("coordinator", ledger.ModelRegistered{Digest: base, Name: inject, Licence: badLic, Source: jsSource})
	ds := ledger.DatasetRegistered{Digest: exDigest(t), Name: html, Licence: badLic, Source: blank, Samples: 10, Root: exDigest(t), Bytes: 100}
	c.commit("trainer-1", ds)

	c.commit("coordinator", ledger.JobRegistered{JobID: job, Recipe: ledger.RoundRecipe{Strategy: "fedavg", Compression: "none",
		MinTrainers: 1, Aggregators: []string{c.nw.ID("aggregator")}}})
	c.commit("coordinator", ledger.RoundOpened{JobID: job, Round: 1, ConfigDigest: exDigest(t), BaseModel: base, Strategy: "fedavg",
		Trainers: []string{c.nw.ID("trainer-1")}, Deadline: time.Now().Add(time.Hour)})
	c.commit("trainer-1", ledger.UpdateSubmitted{JobID: job, Round: 1, UpdateDigest: update, DatasetDigest: ds.Digest, Samples: 10})
	_, h := c.commit("aggregator", ledger.RoundCommitted{JobID: job, Round: 1, ModelDigest: model, Strategy: "fedavg",
		Contributors: []ledger.Contribution{{Trainer: c.nw.ID("trainer-1"), UpdateDigest: update, Weight: 1}}})

	lc, err := c.nw.Ledger(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	js, err := lc.QueryAt(ctx, ledgerv1.QueryKind_QUERY_KIND_LINEAGE, model, 0, h)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.DecodeLineage(js)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := lc.Block(ctx, l.Model.Height, 0, c.nw.ChainID)
	if err != nil {
		t.Fatal(err)
	}
	p := &audit.Provenance{Lineage: l, ChainID: c.nw.ChainID, Time: time.Unix(0, vb.Block.Header.Time)}
	key := newKey(t)
	for _, format := range audit.ProvenanceFormats {
		var b bytes.Buffer
		if err := audit.WriteProvenance(&b, p, format, key); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		doc := b.Bytes()
		if err := provenancetest.Validate(format, doc); err != nil {
			t.Errorf("%s: hostile records break the schema: %v", format, err)
		}
		if bytes.Contains(doc, []byte(`"urn:evil"`)) && format != "in-toto" {
			t.Errorf("%s: the injected JSON became structure:\n%s", format, doc)
		}
		var m map[string]any
		if err := json.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		switch format {
		case "spdx":
			rels, exprs := 0, []string{}
			for _, o := range m["@graph"].([]any) {
				e := o.(map[string]any)
				switch e["type"] {
				case "Relationship":
					rels++
					if e["from"] == "urn:evil" {
						t.Errorf("spdx: an injected relationship: %v", e)
					}
				case "simplelicensing_LicenseExpression":
					exprs = append(exprs, e["simplelicensing_licenseExpression"].(string))
				case "dataset_DatasetPackage":
					if e["name"] != html || strings.HasPrefix(e["software_downloadLocation"].(string), "_:") {
						t.Errorf("spdx dataset: name %q, download location %q", e["name"], e["software_downloadLocation"])
					}
				}
			}
			for _, x := range exprs {
				if x == badLic {
					t.Errorf("spdx: the unbalanced licence %q is used as an expression", badLic)
				}
			}
		case "cyclonedx":
			comps := m["components"].([]any)
			lic := comps[0].(map[string]any)["licenses"].([]any)[0].(map[string]any)
			if lic["expression"] != nil || lic["license"].(map[string]any)["name"] != badLic {
				t.Errorf("cyclonedx: the dataset licence reads %v, want the text %q as a named licence", lic, badLic)
			}
		case "in-toto":
			if !bytes.Contains(doc, []byte(`"payloadType":"application/vnd.in-toto+json"`)) {
				t.Errorf("in-toto envelope: %s", doc)
			}
		}
		t.Logf("%s: %d bytes, valid", format, len(doc))
	}
}
