// Package dsse implements the DSSE signing envelope (the in-toto / Sigstore
// "Dead Simple Signing Envelope") as fedtune uses it: one canonical JSON
// byte form, ed25519 signatures over PAE(payloadType, payload), and key IDs
// that are the lowercase hex SHA-256 of the raw public key.
//
// Ledger transactions and dataset manifests are both DSSE envelopes; this
// package is the one implementation of the format, below both.
//
// Sign signs a payload and Encode gives the envelope's bytes; Decode reads
// them back in canonical form only, and Verify checks the one signature
// with the signer's key. A document of one kind (a dataset manifest, a
// published-dataset manifest) is read with DecodeSigned, which also
// checks the payload type, the single signature and that the payload is
// the document's canonical JSON:
//
//	var m Manifest
//	env, err := dsse.DecodeSigned(data, PayloadType, MaxBytes, &m)
//	// then: m's own checks, and env.Verify(owner's key)
package dsse
