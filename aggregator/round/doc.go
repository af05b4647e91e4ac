// Package round owns one round's aggregation as the aggregator role runs
// it, below both processes that run that role: the coordinator (in
// process, when it holds the aggregator key) and the aggregator node
// (package aggregator/node). Neither imports the other; both import this.
//
// A Task names a round's inputs (by update digest, in canonical order), the
// base model, the server state and the strategy with its options; Task.Proto
// and FromProto are its wire form (fedtune.aggregator.v1), and Task.Request
// builds the aggregator.Request that re-runs it over files, as an auditor
// does offline. A Result is what the aggregation produced: the new model
// (and server state) digest, each accepted trainer's weight and each
// rejected trainer's reason.
//
// Local is the aggregator itself: it fetches each input into an artifact
// store (Local.Fetch; FetchAttempts tries), runs aggregator.Aggregate with
// the chosen kernels backend, stores the new model, and signs the
// aggregator-role transactions (UpdateRejected, RoundCommitted,
// RoundFailed) through a ledger/client Signer, whose client it also reads
// the ledger with:
//
//	l := round.NewLocal(store, workDir, client.NewSigner(lc, key), log)
//	res, err := l.Aggregate(ctx, task, global)
//	h, err := l.Submit(ctx, ledger.RoundCommitted{...})
//
// Local signs only what it derived itself. Own records, per round, the
// updates its aggregation rejected or could not fetch, its own failure
// and the model and weights it produced; Submit refuses (ErrNotOwn) an
// UpdateRejected, RoundFailed or RoundCommitted that does not match that
// record, except a RoundFailed of a round whose deadline the ledger shows
// passed with fewer usable updates than the recipe's min_trainers. It
// also fetches every update the ledger records for the round that is no
// input, and refuses (ErrRefused) a task that leaves out one it can fetch.
//
// DecodeTx decodes the JSON body of an aggregator-role transaction, as a
// remote coordinator sends it.
package round
