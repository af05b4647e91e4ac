// Package node is the standalone aggregator process: it owns the
// aggregator's config file (Config), its gRPC server (Server, serving
// fedtune.aggregator.v1.Aggregator to the coordinator) and the service
// behind it (Service), which checks every request against the ledger
// before the aggregation (round.Local) runs and before anything is
// signed.
//
// Run it with `fedtune aggregator start --config aggregator.yaml`, or in
// Go:
//
//	cfg, err := node.LoadConfig("aggregator.yaml")
//	// flags may change cfg here; NewServer validates it
//	srv, err := node.NewServer(ctx, *cfg, nil, log)
//	err = srv.Run(ctx) // serves until ctx ends
//
// The server admits only the coordinator (its key ID over TLS, through
// internal/tlsid), fetches each round's inputs from the coordinator's
// artifact service into its own digest-verified store, runs the
// aggregation there, uploads the new model and server state back, and
// signs and submits the aggregator-role ledger transactions
// (UpdateRejected, RoundCommitted, RoundFailed) with its own key.
//
// The aggregator takes a round's rules from the ledger, not from the
// coordinator: Aggregate reads the job's RoundRecipe (ledger.JobRegistered;
// it must designate this aggregator) for the strategy, its parameters and
// the privacy options, and checks every input against the round's
// submitted, unrejected updates (sample counts are the ledger's). From the
// recipe and its own result it derives the RoundCommitted it will sign;
// SubmitTx of a RoundCommitted only asks for that commit, is refused when
// the coordinator's body differs from it, and signs the aggregator's own.
//
// The round's base model, the reference weights and the server state come
// from the ledger too: the base is the round's BaseModel, which after a
// committed round must be the last committed model (the reference) with
// that commit's server_state as the state; before any commit the
// reference is the recipe's InitialAdapter for a LoRA job, else the base.
// A request that names anything else is refused, and each blob is fetched
// by its digest into the digest-verified store.
//
// It signs an UpdateRejected or a RoundFailed only as it derived it itself
// (round.Own): an UpdateRejected of an update its aggregation rejected
// (its input checks) or could not fetch from the artifact store after
// round.FetchAttempts tries — it fetches every update the ledger records
// for the round, inputs or not, so "never delivered" is its own
// observation — and a RoundFailed of a round whose aggregation failed
// here, or whose deadline the ledger shows passed with fewer usable
// updates than the recipe's min_trainers. It signs its own reason, not
// the coordinator's; anything else is refused (FailedPrecondition) with
// the reason.
//
// The process links no other role (the coordinator, the trainer, the
// ledger server) and no training code: what it shares with the
// coordinator is in aggregator/round, what it needs of the ledger in
// ledger/client (TestLinksNoOtherRole).
package node
