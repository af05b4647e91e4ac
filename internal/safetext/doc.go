// Package safetext checks the names, IDs and free text that fedtune records
// on its ledger and in signed manifests: what a person reads must be what
// was signed.
//
// Check refuses invalid UTF-8, control characters (C0, DEL, C1), the
// Unicode bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E,
// U+2066–U+2069), which can make "evil-data" display as another name, the
// zero-width characters (U+200B–U+200D, U+2060, U+FEFF), which make two
// different names look the same, and the line and paragraph separators
// (U+2028, U+2029).
package safetext
