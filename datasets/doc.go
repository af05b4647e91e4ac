// Package datasets loads training text for fedtune's trainers and turns it
// into token windows and batches.
//
// # Samples
//
// A Dataset is an ordered list of Samples, each with a stable ID and its Text.
// Load reads three layouts (Options.Format, or chosen by stat and extension):
//
//   - "text" (any file not ending in .jsonl/.ndjson): one sample per non-empty
//     line. The line break (\n or \r\n) is not part of the text; lines holding
//     only white space are skipped. ID = "<file name>:<line number>" (1-based).
//   - "dir" (a folder): one sample per .txt file below it, in bytewise
//     sorted order of their paths; names starting with "." are skipped. Text =
//     the file's content with trailing line breaks removed; empty files are
//     skipped. ID = the file's slash path relative to the folder.
//   - "jsonl" (.jsonl or .ndjson): one sample per non-empty line, each a JSON
//     object. Text = the string field Options.TextField ("text") if the record
//     has it; otherwise the record must have both Options.PromptField
//     ("prompt") and Options.ResponseField ("response"), and Text =
//     JoinPrompt(prompt, response) = prompt + "\n" + response.
//     ID = "<file name>:<line number>".
//
// These samples are the unit a dataset Manifest hashes (one Merkle leaf per
// sample): a line, a JSONL record, or a file. A leading UTF-8 byte order
// mark is ignored.
// Every input must be valid UTF-8; bad input (bad
// JSON, a missing or non-string field, invalid UTF-8, no samples at all) is an
// error naming the file and line.
//
// # Splits, tokens, windows, batches
//
// Split divides a dataset into train and eval by a keyed hash of each
// sample's ID, so the split is fixed by the seed and adding samples never
// moves the others. Tokenize concatenates the samples' encodings, each
// followed by the encoding of "\n". Windows cuts the stream into training
// windows of seqLen+1 tokens (inputs plus shifted targets) and a Batcher
// deals the windows out in a seeded order that is reshuffled every epoch.
//
// For training commitments (model/commitment), a batch names the samples
// it draws from: TokenizeSpans gives each sample's span in the stream,
// WindowSamples the samples each window overlaps and Batcher.Last the
// windows of the last batch. A sample's audit ID (SampleIDs) is its
// manifest leaf, the SHA-256 of its text, not its index: an auditor holding
// only the registered root can check it with a LeafProof, and it does not
// depend on the file's layout or order (published ranges re-order samples
// by leaf).
//
// # Publishing
//
// Publish orders a dataset's samples by their leaf hash (the order of the
// leaves of NewTree, so sample i of a published dataset is leaf i), cuts
// them into shards and fills the publication manifest of internal/dspub;
// VerifyLeaves checks a leaves file against a manifest's Merkle root. The
// root is the one BuildManifest computes for the same samples.
package datasets
