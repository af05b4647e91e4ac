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
//
// The aggregator takes a round's rules from the ledger, not from the
// coordinator: Aggregate reads the job's RoundRecipe (ledger.JobRegistered;
// it must designate this aggregator) for the strategy, its parameters and
// the privacy options, and checks every input against the round's
// submitted, unrejected updates (sample counts are the ledger's). From the
// recipe and its own result it derives the RoundCommitted it will sign;
// SubmitTx of a RoundCommitted only asks for that commit, is refused when
// the coordinator's body differs from it, and signs the aggregator's own.
package aggsvc
