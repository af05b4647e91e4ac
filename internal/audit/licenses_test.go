package audit

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

var updateLicences = flag.Bool("update-licences", false, "rewrite testdata/licences.*.golden")

func licenceLineage() *ledger.Lineage {
	d := func(c byte) string { return strings.Repeat(string(c), 64) }
	return &ledger.Lineage{
		Model: ledger.Model{Digest: d('m')},
		Base:  ledger.Model{Digest: d('b'), Name: "tiny-llama", Licence: "Apache-2.0"},
		Rounds: []ledger.LineageRound{
			{JobID: "j2", Round: 1, Contributors: []ledger.LineageContribution{{Trainer: d('1'), DatasetDigest: d('w')}, {Trainer: d('2'), DatasetDigest: d('n')}}},
			{JobID: "j1", Round: 2, Contributors: []ledger.LineageContribution{{Trainer: d('1'), DatasetDigest: d('w')}}},
		},
		Datasets: []ledger.Dataset{
			{Digest: d('w'), Name: "wiki", Licence: "CC-BY-SA-4.0", Published: true},
			{Digest: d('n'), Name: "notes", Licence: "CC-BY-NC-4.0 OR LicenseRef-mine"},
			{Digest: d('w'), Name: "wiki", Licence: "CC-BY-SA-4.0", Published: true},
		},
	}
}

func TestLicences(t *testing.T) {
	jobs := map[string]*ledger.JobRecord{"j2": {JobID: "j2", Recipe: ledger.RoundRecipe{Licences: []string{"CC-BY-SA-4.0", "Apache-2.0"}}}}
	r := Licences(licenceLineage(), jobs)
	if len(r.Datasets) != 2 || r.Datasets[0].Name != "notes" || r.Datasets[1].Name != "wiki" {
		t.Fatalf("datasets %+v", r.Datasets)
	}
	if got := r.Datasets[1].UsedIn; len(got) != 2 || got[0] != "j2/1" || got[1] != "j1/2" {
		t.Fatalf("wiki used in %q", got)
	}
	if got := r.Datasets[0].Refused; len(got) != 1 || got[0] != "j2" {
		t.Fatalf("notes refused by %q, want j2", got)
	}
	want := map[string][]string{
		"Apache-2.0":      {"attribution"},
		"CC-BY-SA-4.0":    {"attribution", "share-alike"},
		"CC-BY-NC-4.0":    {"attribution", "non-commercial"},
		"LicenseRef-mine": {"not in fedtune's licence table"},
	}
	if len(r.Licences) != len(want) {
		t.Fatalf("licences %+v", r.Licences)
	}
	for _, l := range r.Licences {
		w := want[l.ID]
		if len(l.Obligations) != len(w) {
			t.Fatalf("%s: %q, want %q", l.ID, l.Obligations, w)
		}
		for i := range w {
			if !strings.HasPrefix(l.Obligations[i], w[i]) {
				t.Errorf("%s obligation %d = %q, want %q…", l.ID, i, l.Obligations[i], w[i])
			}
		}
	}
	for _, format := range []string{"table", "json"} {
		var buf bytes.Buffer
		if err := r.Render(&buf, format); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", "licences."+format+".golden")
		if *updateLicences {
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		golden, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update-licences)", err)
		}
		if !bytes.Equal(buf.Bytes(), golden) {
			t.Errorf("%s output changed:\n%s\nwant\n%s", format, buf.Bytes(), golden)
		}
	}
	if err := r.Render(&bytes.Buffer{}, "xml"); err == nil {
		t.Error("unknown format accepted")
	}
}

// A published dataset a job gave out in ranges counts as used by each of
// the job's rounds, though no update names it as its dataset.
func TestLicencesPublishedRanges(t *testing.T) {
	l := licenceLineage()
	pub := strings.Repeat("p", 64)
	l.Datasets = append(l.Datasets, ledger.Dataset{Digest: pub, Name: "pub", Licence: "ODbL-1.0", Published: true})
	jobs := map[string]*ledger.JobRecord{"j1": {JobID: "j1", Recipe: ledger.RoundRecipe{Published: []ledger.PublishedRef{{Digest: pub, Samples: 9}}}}}
	r := Licences(l, jobs)
	for _, d := range r.Datasets {
		if d.Digest == pub && (len(d.UsedIn) != 1 || d.UsedIn[0] != "j1/2") {
			t.Fatalf("published dataset used in %q, want j1/2", d.UsedIn)
		}
	}
	found := false
	for _, lt := range r.Licences {
		if lt.ID == "ODbL-1.0" && strings.Contains(strings.Join(lt.Obligations, " "), "share-alike") {
			found = true
		}
	}
	if !found {
		t.Fatalf("licences %+v lack ODbL-1.0's share-alike", r.Licences)
	}
}
