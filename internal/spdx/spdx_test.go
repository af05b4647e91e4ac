package spdx

import (
	"errors"
	"slices"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		expr string
		ok   bool
	}{
		{"MIT", true}, {"CC-BY-4.0 OR MIT", true}, {"GPL-2.0-or-later+", true}, {"LicenseRef-mine", true},
		{"Apache-2.0 AND CC-BY-SA-4.0", true},
		{"", false}, {"mit", false}, {"MIT OR", false}, {"MIT XOR BSD-2-Clause", false}, {"(MIT)", false}, {"MIT  OR ISC", false},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			err := Validate(tc.expr)
			if (err == nil) != tc.ok {
				t.Fatalf("Validate(%q) = %v, want ok=%v", tc.expr, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrLicence) {
				t.Fatalf("error %v does not wrap ErrLicence", err)
			}
		})
	}
}

func TestAccepts(t *testing.T) {
	for _, tc := range []struct {
		accepted []string
		expr     string
		want     bool
	}{
		{[]string{"MIT"}, "MIT", true},
		{[]string{"MIT"}, "CC-BY-4.0", false},
		{[]string{"MIT"}, "CC-BY-4.0 OR MIT", true},
		{[]string{"MIT"}, "CC-BY-4.0 AND MIT", false},
		{[]string{"MIT", "CC-BY-4.0"}, "CC-BY-4.0 AND MIT", true},
		{[]string{"ISC"}, "MIT AND Apache-2.0 OR ISC", true},
		{[]string{"MIT"}, "MIT AND Apache-2.0 OR ISC", false},
		{[]string{"GPL-2.0-or-later"}, "GPL-2.0-or-later+", true},
		{[]string{"MIT"}, "not an expression", false},
		{nil, "MIT", false},
	} {
		if got := Accepts(tc.accepted, tc.expr); got != tc.want {
			t.Errorf("Accepts(%v, %q) = %v, want %v", tc.accepted, tc.expr, got, tc.want)
		}
	}
}

func TestObligations(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want []string // prefixes of the obligations, in order
	}{
		{"CC0-1.0", nil},
		{"CC-BY-4.0", []string{"attribution"}},
		{"CC-BY-SA-4.0", []string{"attribution", "share-alike"}},
		{"CC-BY-NC-SA-4.0", []string{"attribution", "share-alike", "non-commercial"}},
		{"CC-BY-ND-4.0", []string{"attribution", "no derivatives"}},
		{"AGPL-3.0-only", []string{"attribution", "copyleft", "network use"}},
		{"llama3", []string{"attribution", "use restrictions"}},
	} {
		te, ok := Lookup(tc.id)
		if !ok {
			t.Fatalf("Lookup(%s) not found", tc.id)
		}
		got := te.Obligations()
		if len(got) != len(tc.want) {
			t.Fatalf("%s: obligations %q, want %d starting %q", tc.id, got, len(tc.want), tc.want)
		}
		for i := range got {
			if len(got[i]) < len(tc.want[i]) || got[i][:len(tc.want[i])] != tc.want[i] {
				t.Errorf("%s: obligation %d = %q, want it to start %q", tc.id, i, got[i], tc.want[i])
			}
		}
	}
	if _, ok := Lookup("LicenseRef-x"); ok {
		t.Error("a LicenseRef has known terms")
	}
	if te, ok := Lookup("GPL-3.0-only+"); !ok || !te.Copyleft {
		t.Error("a trailing + is not ignored")
	}
}

func TestIDs(t *testing.T) {
	if got := IDs("MIT OR CC-BY-4.0 AND MIT+"); !slices.Equal(got, []string{"MIT", "CC-BY-4.0"}) {
		t.Errorf("IDs = %q", got)
	}
	for _, id := range All() {
		if err := Validate(id); err != nil {
			t.Errorf("table ID %s does not validate: %v", id, err)
		}
	}
}
