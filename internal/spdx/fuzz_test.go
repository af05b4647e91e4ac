package spdx

import "testing"

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"MIT", "CC-BY-4.0 OR MIT", "Apache-2.0 AND LicenseRef-x+", "MIT OR", "(MIT)", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := Validate(s)
		ids := IDs(s)
		if err != nil {
			if Accepts(ids, s) {
				t.Fatalf("invalid %q is accepted", s)
			}
			return
		}
		// A valid expression is accepted by the list of all its IDs.
		if !Accepts(ids, s) {
			t.Fatalf("%q is not accepted by its own IDs %q", s, ids)
		}
		for _, id := range ids {
			if !ValidID(id) {
				t.Fatalf("%q: ID %q of a valid expression is not valid", s, id)
			}
		}
	})
}
