// Package dspub is the format of a published dataset: the signed manifest
// (a DSSE envelope over canonical JSON) that names the dataset's
// content-addressed shards, its sample leaves and their Merkle root, its
// licence and card; the shard encoding; the leaves file; and the checks
// that name the bad shard and sample when fetched bytes do not match.
//
// A published dataset's samples are ordered by their leaf value, the
// SHA-256 of the sample's text (as datasets.SampleDigest computes it), so
// the order of the samples is the order of the leaves of the RFC 6962 tree
// that datasets.NewTree builds over them: sample i is leaf i, shard k holds
// the samples [First, First+Samples) and a sample range of a job is a
// range of leaves. The leaves file is the n leaves, 32 bytes each, in that
// order; its Merkle root is the manifest's root, which datasets.VerifyLeaves
// checks (this package does no hashing of trees: it sits below both the
// ledger, which checks a manifest before recording a DatasetPublished, and
// datasets, which builds and checks trees).
//
// A shard is UTF-8 text, one sample per line, each line the sample's text
// as a JSON string in Go's canonical encoding (encoding/json.Marshal), so
// that samples may hold line breaks and every shard has one byte form.
//
// Publishing: datasets.Publish cuts a dataset into shards and fills a
// Manifest; Sign signs it; the CLI uploads the shards, the leaves and the
// card to the artifact store and records the manifest with a
// ledger.DatasetPublished. Fetching: Decode the manifest from the ledger,
// check the leaves (datasets.VerifyLeaves), then every shard (CheckShard).
package dspub
