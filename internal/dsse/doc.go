// Package dsse implements the DSSE signing envelope (the in-toto / Sigstore
// "Dead Simple Signing Envelope") as fedtune uses it: one canonical JSON
// byte form, ed25519 signatures over PAE(payloadType, payload), and key IDs
// that are the lowercase hex SHA-256 of the raw public key.
//
// Ledger transactions and dataset manifests are both DSSE envelopes; this
// package is the one implementation of the format, below both.
package dsse
