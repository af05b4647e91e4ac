// Package spdx knows the SPDX licence identifiers fedtune accepts for
// datasets and models, what each asks of the one who uses the licensed
// work, and how a licence expression is checked against a list of accepted
// licences.
//
// The table is small and shipped with the code (no download): the common
// open licences for code, data and model weights. Anything else is written
// LicenseRef-<idstring>, which fedtune accepts but knows nothing about.
//
// Expressions are SPDX licence expressions without parentheses or WITH:
// IDs (optionally followed by "+") joined by AND and OR, AND binding
// tighter than OR, as in SPDX.
//
//	if err := spdx.Validate("CC-BY-4.0 OR MIT"); err != nil { ... }
//	ok := spdx.Accepts([]string{"MIT"}, "CC-BY-4.0 OR MIT") // true
//	for _, id := range spdx.IDs("CC-BY-SA-4.0") {
//		t, _ := spdx.Lookup(id) // t.Obligations() lists attribution, share-alike
//	}
package spdx
