// Package aggsvc is the standalone aggregator process (fedtune aggregator
// start): it serves fedtune.aggregator.v1.Aggregator to the coordinator
// over TLS (internal/tlsid, the coordinator's key ID only), fetches each
// round's inputs from the coordinator's artifact service into its own
// digest-verified store, runs the aggregation there
// (coordinator.LocalAggregator, i.e. aggregator.Aggregate), uploads the new
// model and server state back, and signs and submits the aggregator-role
// ledger transactions (UpdateRejected, RoundCommitted, RoundFailed) with
// its own key. It lives outside package aggregator, which may not import
// the ledger.
package aggsvc
