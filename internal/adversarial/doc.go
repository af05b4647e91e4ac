// Package adversarial is fedtune's adversarial suite: tests that start real
// parts (ledger nodes, a coordinator, trainers) on loopback and try, as each
// party could, to break the record: strangers on the network, trainers,
// aggregators, coordinators and ledger node operators. Every attack must fail
// with a reason that names what was wrong, and leave the chain and the stores
// as they were.
//
// The package has no exported API; its tests are the point. One file per kind
// of attack (transport_test.go, pin_test.go, rounds_test.go,
// artifacts_test.go, samples_test.go, attest_test.go for dataset
// attestations, spotcheck_test.go for verifiers' verdicts and the draw, …); existing_test.go and
// rounds_existing_test.go guard the basic refusals (forged and replayed
// txs, round rules, joins, uploads, malformed updates). The harness in
// harness_test.go starts networks and snapshots their state so a test can
// check that an attack changed nothing: a new attack starts a network with
// it, attacks, asserts the refusal's reason and compares the snapshots.
//
// Run the suite with go test ./internal/adversarial (minutes: whole
// networks); tests named TestNoRace... are skipped under -race and run in
// make test's second pass.
//
// A few lies the ledger cannot see, since it holds digests and not the
// bytes behind them, are caught offline instead: an aggregator that rejects
// a well-formed update (rejections_test.go) passes the ledger, and
// `fedtune audit verify` of the export with the artifacts names it; a
// pretrain job whose round 1 starts from another model than the one its
// job file's seed initialises passes the ledger, and audit verify with the
// job file names it (pretrain_test.go); an
// inference node's answer is checked by `fedtune audit receipt` against
// the chain and by replay (receipt_test.go).
package adversarial
