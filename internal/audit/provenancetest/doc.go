// Package provenancetest validates fedtune's provenance documents (see
// audit.WriteProvenance) against the published JSON schemas, which it
// ships in testdata/schemas (their sources and SHA-256 digests are in the
// README there): SPDX 3.0.1, CycloneDX 1.6 with the SPDX licence list and
// JSF schemas it refers to, and, where no official schema exists, schemas
// written from the specs for the in-toto Statement v1, the OpenSSF model
// signing v1.0 predicate and the DSSE envelope.
//
// It is for tests only: the fedtune binary does not link it.
package provenancetest
