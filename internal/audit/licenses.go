package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/fedtune/fedtune/internal/spdx"
	"github.com/fedtune/fedtune/ledger"
)

// LicenceReport lists every dataset and licence behind a model, and what
// each licence asks of the model's user.
type LicenceReport struct {
	Model string `json:"model"`
	// Base is the registered base model the lineage starts from, with its
	// licence.
	Base     LicensedItem   `json:"base"`
	Datasets []LicensedItem `json:"datasets"`
	// Licences are the licence IDs of the base model and every dataset,
	// each once, with their terms.
	Licences []LicenceTerms `json:"licences"`
}

// LicensedItem is one model or dataset behind a model.
type LicensedItem struct {
	Digest    string `json:"digest"`
	Name      string `json:"name"`
	Licence   string `json:"licence"`
	Published bool   `json:"published,omitempty"`
	// UsedIn lists the rounds ("job/round") whose contributors cited the
	// dataset.
	UsedIn []string `json:"used_in,omitempty"`
	// Refused says, when a job that used the dataset lists accepted
	// licences the dataset's licence does not satisfy, which jobs.
	Refused []string `json:"refused_by,omitempty"`
}

// LicenceTerms is one licence ID and what it asks.
type LicenceTerms struct {
	ID          string   `json:"id"`
	Name        string   `json:"name,omitempty"`
	Known       bool     `json:"known"`
	Obligations []string `json:"obligations"`
	// From lists the names of the model and datasets under it.
	From []string `json:"from"`
}

// Licences builds the licence report of lineage l. jobs, when not nil,
// holds the recipes of the lineage's jobs by job ID, to mark a dataset a
// job's licences did not admit (which the ledger's commit rules should
// have kept out) and to count the published datasets of a job's recipe
// as used by each of its rounds; their records must then be among
// l.Datasets (the caller adds them).
func Licences(l *ledger.Lineage, jobs map[string]*ledger.JobRecord) *LicenceReport {
	r := &LicenceReport{Model: l.Model.Digest, Base: LicensedItem{Digest: l.Base.Digest, Name: l.Base.Name, Licence: l.Base.Licence}}
	used := map[string][]string{}
	jobsOf := map[string][]string{}
	for _, rd := range l.Rounds {
		at := fmt.Sprintf("%s/%d", rd.JobID, rd.Round)
		if jr := jobs[rd.JobID]; jr != nil {
			// Published data the job's rounds gave out in ranges, which
			// an update on a trainer's own data names only by its ranges.
			for _, p := range jr.Recipe.Published {
				if !slices.Contains(used[p.Digest], at) {
					used[p.Digest] = append(used[p.Digest], at)
				}
				if !slices.Contains(jobsOf[p.Digest], rd.JobID) {
					jobsOf[p.Digest] = append(jobsOf[p.Digest], rd.JobID)
				}
			}
		}
		for _, c := range rd.Contributors {
			for _, d := range c.Datasets() {
				if !slices.Contains(used[d], at) {
					used[d] = append(used[d], at)
				}
				if !slices.Contains(jobsOf[d], rd.JobID) {
					jobsOf[d] = append(jobsOf[d], rd.JobID)
				}
			}
		}
	}
	terms := map[string]*LicenceTerms{}
	var order []string
	addLicence := func(expr, from string) {
		for _, id := range spdx.IDs(expr) {
			t, ok := terms[id]
			if !ok {
				lt, known := spdx.Lookup(id)
				t = &LicenceTerms{ID: id, Name: lt.Name, Known: known, Obligations: lt.Obligations()}
				if !known {
					t.Obligations = []string{"not in fedtune's licence table: read the licence itself"}
				} else if t.Obligations == nil {
					t.Obligations = []string{}
				}
				terms[id] = t
				order = append(order, id)
			}
			if !slices.Contains(t.From, from) {
				t.From = append(t.From, from)
			}
		}
	}
	if l.Base.Licence != "" {
		addLicence(l.Base.Licence, "base model "+nameOr(l.Base.Name, l.Base.Digest))
	}
	for _, d := range LineageDatasets(l) {
		it := LicensedItem{Digest: d.Digest, Name: d.Name, Licence: d.Licence, Published: d.Published, UsedIn: used[d.Digest]}
		for _, j := range jobsOf[d.Digest] {
			if jr := jobs[j]; jr != nil && !jr.Recipe.AcceptsLicence(d.Licence) {
				it.Refused = append(it.Refused, j)
			}
		}
		r.Datasets = append(r.Datasets, it)
		addLicence(d.Licence, "dataset "+nameOr(d.Name, d.Digest))
	}
	slices.Sort(order)
	for _, id := range order {
		r.Licences = append(r.Licences, *terms[id])
	}
	return r
}

func nameOr(name, digest string) string {
	if name != "" {
		return name
	}
	return digest
}

// Render writes the report as "table" or "json".
func (r *LicenceReport) Render(w io.Writer, format string) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case "table", "":
	default:
		return fmt.Errorf("format %q: want table or json", format)
	}
	fmt.Fprintf(w, "model %s\nbase  %s (%s) licence %s\n\n", r.Model, nameOr(r.Base.Name, "unnamed"), r.Base.Digest, orNone(r.Base.Licence))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATASET\tDIGEST\tLICENCE\tKIND\tUSED IN")
	for _, d := range r.Datasets {
		kind := "private"
		if d.Published {
			kind = "published"
		}
		used := strings.Join(d.UsedIn, " ")
		if len(d.Refused) > 0 {
			used += "  (NOT ACCEPTED by job " + strings.Join(d.Refused, ", ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.Digest, d.Licence, kind, used)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nwhat the licences ask of whoever uses this model:")
	for _, t := range r.Licences {
		name := t.Name
		if name == "" {
			name = "unknown licence"
		}
		fmt.Fprintf(w, "  %s (%s), from %s\n", t.ID, name, strings.Join(t.From, ", "))
		if len(t.Obligations) == 0 {
			fmt.Fprintln(w, "    - no conditions")
		}
		for _, o := range t.Obligations {
			fmt.Fprintf(w, "    - %s\n", o)
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none recorded)"
	}
	return s
}
