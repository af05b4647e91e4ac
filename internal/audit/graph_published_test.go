package audit

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/ledger"
)

// TestLineageNamesMixedDatasets: a trainer that mixed its own data with
// published ranges is shown with both datasets by audit lineage (every
// format), audit licenses and the provenance documents.
func TestLineageNamesMixedDatasets(t *testing.T) {
	d := func(c byte) string { return strings.Repeat(string(c), 64) }
	own, pub := d('1'), d('2')
	l := &ledger.Lineage{
		Model: ledger.Model{Digest: d('e'), Height: 5}, Base: ledger.Model{Digest: d('b'), Name: "base", Height: 1},
		Rounds: []ledger.LineageRound{{JobID: "j", Round: 1, BaseModel: d('b'), ModelDigest: d('e'), Strategy: "fedavg", OpenedHeight: 3, CommittedHeight: 5,
			Aggregator: d('a'), Contributors: []ledger.LineageContribution{{Trainer: d('c'), UpdateDigest: d('f'), DatasetDigest: own, Samples: 4, Weight: 1,
				Published: []string{pub}}}}},
		Datasets: []ledger.Dataset{{Digest: own, Name: "mine", Licence: "MIT", Height: 2}, {Digest: pub, Name: "wiki", Licence: "CC-BY-SA-4.0", Published: true, Height: 2}},
	}
	for _, format := range []string{"table", "json", "dot", "html"} {
		var b bytes.Buffer
		if err := Render(&b, NewGraph(l, nil), format); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{short(own), short(pub)} {
			if !bytes.Contains(b.Bytes(), []byte(want)) {
				t.Errorf("audit lineage --format %s does not name dataset %s:\n%s", format, want, b.String())
			}
		}
	}
	rep := Licences(l, nil)
	var ids []string
	for _, lt := range rep.Licences {
		ids = append(ids, lt.ID)
	}
	if got := strings.Join(ids, " "); !strings.Contains(got, "MIT") || !strings.Contains(got, "CC-BY-SA-4.0") {
		t.Errorf("licences %q: want MIT and CC-BY-SA-4.0", got)
	}
	p := &Provenance{Lineage: l, ChainID: "c", Time: t0, BlockTimes: map[uint64]time.Time{}}
	for _, format := range ProvenanceFormats {
		out := writeProvenance(t, p, format)
		if format == "in-toto" {
			env, err := dsse.Decode(bytes.TrimSpace(out))
			if err != nil {
				t.Fatal(err)
			}
			out = env.Payload
		}
		if !bytes.Contains(out, []byte(own)) || !bytes.Contains(out, []byte(pub)) || !bytes.Contains(out, []byte("published")) {
			t.Errorf("%s provenance does not name both datasets of the contribution", format)
		}
	}
}
