// Package audit is fedtune's offline audit toolkit: it exports a ledger
// chain to one self-describing file, re-verifies a chain from that file (or
// from a node) without trusting whoever served it, re-runs every committed
// round's aggregation from the stored artifacts, and renders a model's
// lineage as a table, JSON, Graphviz DOT or a self-contained HTML page.
//
// # Export format
//
// An export (conventionally *.fedtune) is
//
//	magic "FTEXPORT" ‖ version u8 (=1) ‖ frames…
//
// where each frame is kind u8 ‖ length u32 (big-endian) ‖ payload:
//
//	kind 'G'  the genesis file, exactly as the chain's nodes loaded it (YAML)
//	kind 'B'  one block in ledger.EncodeBlock form; heights 0, 1, 2, … in order
//	kind 'E'  end: block count u64 ‖ hash of the last block [32]
//
// in the order G, B (at least the genesis block), E, then end of file. The
// end frame makes a truncated file an error rather than a shorter chain.
// Nothing in the file is trusted: Verify re-derives every hash from the
// genesis.
//
// # Verification
//
// Verify replays the chain on a fresh fsm.FSM over an in-memory pebble
// store: the genesis must give the exported block 0; each block's height and
// previous hash must follow; each transaction is re-checked (envelope,
// signature against the member table as of that block, role, nonce, round
// rules) and must be accepted; the re-derived tx root, state hash and whole
// block must equal the exported ones. With an artifact directory (blobs
// named by digest, flat "<digest>" or sharded "<ab>/<digest>") it also
// checks that every model and update digest named exists and hashes right,
// and re-runs each committed round's aggregation (aggregator.Aggregate with
// the committed strategy, parameters and contributors, the submitted
// sample counts as weights, the round's base model and the job's previous
// server state) and compares the result's digest and shares with the
// committed ones. Independently of the FSM, every round must start from
// its job's last committed model (round 1: the recipe's base model), and
// every UpdateRejected must be signed by an aggregator the job's recipe
// designates; with artifacts, the rejected update must fail one of the
// aggregator's own input checks (aggregator.Validate against the round's
// reference: malformed, a layout unlike the reference's, a non-finite
// value, a norm above the recipe's max_norm), or the round fails naming
// the update. A rejected update that is not in the artifacts (one never
// delivered) cannot be checked: it is listed in Report.Unverifiable, or
// fails with VerifyOptions.StrictRejections. The one rejection not about
// the update's content, a dataset the job does not admit, is checked
// against a job file in VerifyOptions.Jobs (unverifiable without one).
// The first round of a LoRA job aggregates against the
// job's initial adapter, which the chain does not carry: Verify derives it
// (coordinator.InitialAdapter) from a job file given in VerifyOptions.Jobs
// whose digest is the round's config digest, and the base model's config
// from the artifacts. The first thing that differs is returned as a
// *Mismatch naming the height, the transaction and the field.
//
// # Lineage
//
// NewGraph turns a ledger.Lineage into a Graph (base model, rounds with
// strategy and parameters, contributors with weights, update digests and
// datasets, rejected updates with reasons); Render writes it in one of the
// Formats. The HTML page has no external resources: the layout is computed
// here, an inline script draws it as SVG and shows a node's details when it
// is clicked. Each dataset carries the Merkle root its DatasetRegistered
// recorded.
//
// A lineage read from one ledger node is that node's word. Anchor checks
// every fact of it against the signed tx that recorded it (registrations,
// each round's RoundOpened, UpdateSubmitted, UpdateRejected and
// RoundCommitted), in blocks carrying a quorum of valid node cosignatures
// (only the genesis file's nodes, when given), and returns the lineage
// rebuilt from those txs, or an *AnchorError naming the first record that
// differs. A BlockSource (a ledger/client Client) serves the blocks.
//
// # Sample membership
//
// Contains asks whether one sample went into a model: for every dataset of
// the model's lineage (LineageDatasets) it asks the coordinator's
// ProveSample, which relays the sample's leaf hash (SampleLeaf; never the
// text) to the dataset's trainer. Each answer is a datasets.Proof that
// CheckAnswer decodes and verifies against the root and sample count the
// ledger recorded, trusting neither coordinator nor trainer: the dataset is
// Included, Excluded, or Unanswered with the reason (trainer not connected,
// timeout, refused, proof does not verify). RenderContains prints the
// report as a table or JSON. ContainsWithLeaves answers a published
// dataset itself instead, from its leaves file (readable by every member)
// in the artifact store, and checks that proof the same way.
//
// Excluded means "not in the tree its owner registered, assuming the owner
// built it as the manifest format requires" (over sorted leaves): the
// ledger keeps only the root, so an exclusion proof cannot catch an owner
// that registered a tree built otherwise. The lineage, roots and sample
// counts are taken as the caller gives them: read from one ledger node and
// trusted as read, or first anchored with Anchor.
//
// # Published datasets and the chain's head
//
// PublishedDatasets verifies an export as Verify does and lists the
// published datasets of the state it derives: complete for that chain,
// unlike a node's published-dataset index, which a lying node can leave a
// dataset out of. AnchorHead checks that the head block of a chain
// verified block by block carries a quorum of cosignatures from the
// genesis nodes, so a node cannot serve a chain of its own making; it can
// still serve an older head, which callers report by height.
//
// # Provenance
//
// WriteProvenance turns a model's lineage (a Provenance: the lineage, the
// chain ID and the time of the block that recorded the model, plus the
// auditors' dataset attestations) into the documents auditors' tools read,
// one of ProvenanceFormats:
//
//   - "in-toto": an in-toto Statement v1 in the OpenSSF model signing v1.0
//     shape (predicate type https://model_signing/signature/v1.0, as
//     github.com/sigstore/model-transparency writes and verifies it): one
//     subject, the model, whose sha256 is the SHA-256 over the raw digests
//     of its files in name order; the files (the canonical
//     model.safetensors, whose SHA-256 is the weight digest, and
//     config.json when recorded; for an imported model the files it was
//     imported from) as predicate.resources; the lineage under
//     predicate.fedtune, which model-signing verifiers ignore. It is
//     DSSE-signed by the auditor (payload type application/vnd.in-toto+json).
//   - "spdx": an SPDX 3.0.1 JSON-LD document (profiles core, software, ai,
//     dataset, build, simpleLicensing): ai_AIPackage per model,
//     dataset_DatasetPackage per dataset, build_Build per round,
//     relationships trainedOn, hasInput/hasOutput, invokedBy (aggregator),
//     delegatedTo (contributors), descendantOf, hasDeclaredLicense.
//   - "cyclonedx": a CycloneDX 1.6 ML-BOM: the model as the metadata
//     component (machine-learning-model with a modelCard), data components,
//     the base and intermediate models as pedigree ancestors, the lineage as
//     the dependency graph.
//
// Output is deterministic (sorted contents, struct or sorted-key JSON, the
// block time as the only timestamp, a serial number derived from the chain
// and the model), so the same chain always gives the same bytes, whether
// read from an export (ProvenanceFromExport) or from a node. The package
// provenancetest validates the documents against the published schemas it
// ships.
package audit
