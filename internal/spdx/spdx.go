package spdx

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// ErrLicence is wrapped by Validate for an expression that is not made of
// known IDs and LicenseRef-s.
var ErrLicence = errors.New("spdx: bad licence")

// Terms is what a licence asks of its user, as far as training on data
// or publishing a model goes. It is a summary for a person, not legal
// advice: Obligations says so in words.
type Terms struct {
	// ID is the SPDX identifier and Name the licence's full name.
	ID, Name string
	// Attribution: credit the authors and keep the licence notice.
	Attribution bool
	// ShareAlike: adaptations must be shared under the same or a
	// compatible licence (CC -SA, ODbL, CDLA-Sharing, GFDL).
	ShareAlike bool
	// Copyleft: derived works that are distributed must be licensed
	// alike and come with their source (GPL family; LGPL and MPL weakly).
	Copyleft bool
	// NetworkCopyleft: offering a derived work over a network counts as
	// distributing it (AGPL).
	NetworkCopyleft bool
	// NonCommercial: no commercial use (CC -NC).
	NonCommercial bool
	// NoDerivatives: no adapted material may be shared (CC -ND).
	NoDerivatives bool
	// UseRestrictions: the licence lists uses that are not allowed and
	// asks that they be passed on (OpenRAIL, Llama community licences).
	UseRestrictions bool
	// PublicDomain: no conditions at all.
	PublicDomain bool
}

// Obligations lists in words what the licence asks of its user; an empty
// list for a licence with no conditions.
func (t Terms) Obligations() []string {
	var out []string
	add := func(c bool, s string) {
		if c {
			out = append(out, s)
		}
	}
	add(t.Attribution, "attribution: credit the authors and keep the licence and copyright notices")
	add(t.ShareAlike, "share-alike: adaptations must be shared under the same or a compatible licence")
	add(t.Copyleft, "copyleft: derived works that are distributed must carry the same licence and their source")
	add(t.NetworkCopyleft, "network use counts as distribution: offer the source to users over a network")
	add(t.NonCommercial, "non-commercial: no commercial use")
	add(t.NoDerivatives, "no derivatives: adapted material may not be shared")
	add(t.UseRestrictions, "use restrictions: the licence forbids some uses, and they must be passed on to users")
	return out
}

type flag uint16

const (
	by flag = 1 << iota
	sa
	cl
	net
	nc
	nd
	use
	pd
)

var table = map[string]struct {
	name  string
	flags flag
}{
	"0BSD":                {"BSD Zero Clause License", pd},
	"AFL-3.0":             {"Academic Free License v3.0", by},
	"AGPL-3.0-only":       {"GNU Affero General Public License v3.0 only", by | cl | net},
	"AGPL-3.0-or-later":   {"GNU Affero General Public License v3.0 or later", by | cl | net},
	"Apache-2.0":          {"Apache License 2.0", by},
	"Artistic-2.0":        {"Artistic License 2.0", by},
	"BSD-2-Clause":        {"BSD 2-Clause \"Simplified\" License", by},
	"BSD-3-Clause":        {"BSD 3-Clause \"New\" or \"Revised\" License", by},
	"BSL-1.0":             {"Boost Software License 1.0", by},
	"CC-BY-3.0":           {"Creative Commons Attribution 3.0 Unported", by},
	"CC-BY-4.0":           {"Creative Commons Attribution 4.0 International", by},
	"CC-BY-NC-4.0":        {"Creative Commons Attribution Non Commercial 4.0 International", by | nc},
	"CC-BY-NC-SA-4.0":     {"Creative Commons Attribution Non Commercial Share Alike 4.0 International", by | nc | sa},
	"CC-BY-ND-4.0":        {"Creative Commons Attribution No Derivatives 4.0 International", by | nd},
	"CC-BY-SA-3.0":        {"Creative Commons Attribution Share Alike 3.0 Unported", by | sa},
	"CC-BY-SA-4.0":        {"Creative Commons Attribution Share Alike 4.0 International", by | sa},
	"CC-PDDC":             {"Creative Commons Public Domain Dedication and Certification", pd},
	"CC0-1.0":             {"Creative Commons Zero v1.0 Universal", pd},
	"CDLA-Permissive-2.0": {"Community Data License Agreement Permissive 2.0", by},
	"CDLA-Sharing-1.0":    {"Community Data License Agreement Sharing 1.0", by | sa},
	"EPL-2.0":             {"Eclipse Public License 2.0", by | cl},
	"GFDL-1.3-only":       {"GNU Free Documentation License v1.3 only", by | sa},
	"GFDL-1.3-or-later":   {"GNU Free Documentation License v1.3 or later", by | sa},
	"GPL-2.0-only":        {"GNU General Public License v2.0 only", by | cl},
	"GPL-2.0-or-later":    {"GNU General Public License v2.0 or later", by | cl},
	"GPL-3.0-only":        {"GNU General Public License v3.0 only", by | cl},
	"GPL-3.0-or-later":    {"GNU General Public License v3.0 or later", by | cl},
	"ISC":                 {"ISC License", by},
	"LGPL-2.1-only":       {"GNU Lesser General Public License v2.1 only", by | cl},
	"LGPL-2.1-or-later":   {"GNU Lesser General Public License v2.1 or later", by | cl},
	"LGPL-3.0-only":       {"GNU Lesser General Public License v3.0 only", by | cl},
	"LGPL-3.0-or-later":   {"GNU Lesser General Public License v3.0 or later", by | cl},
	"MIT":                 {"MIT License", by},
	"MPL-2.0":             {"Mozilla Public License 2.0", by | cl},
	"ODC-By-1.0":          {"Open Data Commons Attribution License v1.0", by},
	"ODbL-1.0":            {"Open Data Commons Open Database License v1.0", by | sa},
	"OFL-1.1":             {"SIL Open Font License 1.1", by | sa},
	"OpenRAIL":            {"Open RAIL", by | use},
	"PDDL-1.0":            {"Open Data Commons Public Domain Dedication & License 1.0", pd},
	"Unlicense":           {"The Unlicense", pd},
	"Zlib":                {"zlib License", by},
	"llama2":              {"Llama 2 Community License Agreement", by | use},
	"llama3":              {"Llama 3 Community License Agreement", by | use},
	"llama3.1":            {"Llama 3.1 Community License Agreement", by | use},
	"llama3.2":            {"Llama 3.2 Community License Agreement", by | use},
}

var licenseRef = regexp.MustCompile(`^LicenseRef-[A-Za-z0-9.-]+$`)

// Known reports whether id is in the shipped table (exact case).
func Known(id string) bool { _, ok := table[id]; return ok }

// Lookup returns the terms of a known ID; ok is false for a LicenseRef or
// an unknown ID. A trailing "+" ("or later") is ignored.
func Lookup(id string) (t Terms, ok bool) {
	id = strings.TrimSuffix(id, "+")
	e, ok := table[id]
	if !ok {
		return Terms{ID: id}, false
	}
	f := e.flags
	return Terms{ID: id, Name: e.name, Attribution: f&by != 0, ShareAlike: f&sa != 0, Copyleft: f&cl != 0,
		NetworkCopyleft: f&net != 0, NonCommercial: f&nc != 0, NoDerivatives: f&nd != 0, UseRestrictions: f&use != 0,
		PublicDomain: f&pd != 0}, true
}

// All returns the IDs of the shipped table, sorted.
func All() []string {
	out := make([]string, 0, len(table))
	for id := range table {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// ValidID reports whether id (without "+") is a known ID or a LicenseRef.
func ValidID(id string) bool {
	id = strings.TrimSuffix(id, "+")
	return Known(id) || licenseRef.MatchString(id)
}

// Validate checks that s is an SPDX licence expression made of known IDs
// or LicenseRef-<idstring> joined by AND or OR, each optionally followed
// by "+"; parentheses and WITH are not accepted. Errors wrap ErrLicence
// and name the offending term.
func Validate(s string) error {
	if s == "" {
		return fmt.Errorf("%w: licence is required (an SPDX ID such as Apache-2.0, or LicenseRef-...)", ErrLicence)
	}
	terms := strings.Split(s, " ")
	for i, t := range terms {
		if i%2 == 1 {
			if t != "AND" && t != "OR" {
				return fmt.Errorf("%w: %q: expected AND or OR at term %d, got %q", ErrLicence, s, i+1, t)
			}
			continue
		}
		if !ValidID(t) {
			return fmt.Errorf("%w: %q: %q is not a known SPDX licence ID (use the exact case, e.g. Apache-2.0, CC-BY-4.0, or LicenseRef-<name>)", ErrLicence, s, t)
		}
	}
	if len(terms)%2 == 0 {
		return fmt.Errorf("%w: %q ends with an operator", ErrLicence, s)
	}
	return nil
}

// IDs returns the licence IDs of a valid expression in order, each once,
// without a trailing "+".
func IDs(expr string) []string {
	var out []string
	for i, t := range strings.Split(expr, " ") {
		if i%2 == 1 {
			continue
		}
		t = strings.TrimSuffix(t, "+")
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// Accepts reports whether a work under expr may be used by someone who
// accepts only the licences in accepted (IDs, compared without "+"): for
// "A OR B" one of them must be accepted, for "A AND B" both; AND binds
// tighter than OR. An invalid expr is not accepted.
func Accepts(accepted []string, expr string) bool {
	if Validate(expr) != nil {
		return false
	}
	ok := func(id string) bool {
		id = strings.TrimSuffix(id, "+")
		for _, a := range accepted {
			if strings.TrimSuffix(a, "+") == id {
				return true
			}
		}
		return false
	}
	for _, group := range strings.Split(expr, " OR ") {
		all := true
		for _, id := range strings.Split(group, " AND ") {
			if !ok(id) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
