package fsm

import (
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

var updateLineageGolden = flag.Bool("update-lineage", false, "rewrite testdata/lineage_link.golden")

// goldenLinks are a lineage record as written before contributions named
// their published datasets (no contributor has any), and one whose second
// contributor mixed its own data with published ranges.
func goldenLinks() []*lineageLink {
	d := func(c byte) string { return strings.Repeat(string(c), 64) }
	base := func() *lineageLink {
		return &lineageLink{JobID: "job-1", Round: 2, ConfigDigest: d('c'), BaseModel: d('b'), ModelDigest: d('m'), Strategy: "fedavg",
			Params: map[string]string{"eta": "0.1"}, OpenedHeight: 5, CommittedHeight: 7, Aggregator: d('a'),
			Contributors: []ledger.LineageContribution{
				{Trainer: d('1'), UpdateDigest: d('u'), DatasetDigest: d('d'), Samples: 10, Weight: 0.25},
				{Trainer: d('2'), UpdateDigest: d('v'), DatasetDigest: d('e'), Samples: 30, Weight: 0.75},
			},
			Rejected: []ledger.RejectedUpdate{{Trainer: d('3'), UpdateDigest: d('w'), Reason: "norm"}}}
	}
	mixed := base()
	mixed.Contributors[1].Published = []string{d('p'), d('q')}
	return []*lineageLink{base(), mixed}
}

// TestLineageLinkGolden: the encoding of a lineage record, one hex line
// per record of goldenLinks; the old form keeps its bytes (no trailing
// section) and decodes with no published datasets, the new one
// round-trips, and a record with an unknown trailing section is refused.
func TestLineageLinkGolden(t *testing.T) {
	links := goldenLinks()
	var lines []string
	for _, l := range links {
		lines = append(lines, hex.EncodeToString(l.encode()))
	}
	golden := filepath.Join("testdata", "lineage_link.golden")
	if *updateLineageGolden {
		if err := os.WriteFile(golden, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update-lineage)", err)
	}
	wantLines := strings.Split(strings.TrimSpace(string(want)), "\n")
	if len(wantLines) != len(lines) {
		t.Fatalf("%s has %d lines, want %d", golden, len(wantLines), len(lines))
	}
	for i, w := range wantLines {
		if lines[i] != w {
			t.Errorf("record %d encodes to\n%s\nwant (%s)\n%s", i, lines[i], golden, w)
		}
		raw, _ := hex.DecodeString(w)
		got, err := decodeLineageLink(raw)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, links[i]) {
			t.Errorf("record %d decodes to %+v, want %+v", i, got, links[i])
		}
	}
	if strings.HasPrefix(lines[1], lines[0]) == false {
		t.Errorf("the new form is not the old form plus a trailing section")
	}
	raw, _ := hex.DecodeString(lines[0])
	if _, err := decodeLineageLink(append(raw, 9)); err == nil || !strings.Contains(err.Error(), "unknown trailing section 9") {
		t.Errorf("a record with trailing section 9: %v", err)
	}
	if _, err := decodeLineageLink(append(raw, lineageTagPublished)); err == nil {
		t.Error("a record with a cut-off published section decodes")
	}
}

// FuzzDecodeLineageLink: decoding outside bytes never panics, and what
// decodes can be encoded again.
func FuzzDecodeLineageLink(f *testing.F) {
	for _, l := range goldenLinks() {
		f.Add(l.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLineageLink(b)
		if err != nil {
			return
		}
		_ = l.encode()
	})
}
