// Package verifier is the verifier node: a ledger member with role
// verifier that spot-checks the updates of jobs whose recipe names it
// (ledger.VerifyRule.By).
//
// A Node follows the ledger's blocks. When a job's coordinator closes a
// round's submissions (ledger.SubmissionsClosed), the hash of the block
// holding that tx is the round's draw seed: the node computes, as the
// ledger does, which of the round's updates are drawn
// (ledger.RoundRecipe.DrawnUpdate), replays each drawn update's local
// training through its Replayer (bit-exact, on the job's published data;
// internal/spotcheck's fetches every input, the base model included, by
// the digests the ledger records),
// and signs the verdict: ledger.UpdateVerified when the replay matches
// the update and its training commitment bit for bit, or
// ledger.UpdateRejected naming the first differing step otherwise. The
// coordinator waits for those verdicts before the round aggregates, and
// the ledger refuses a commit that counts a drawn update no verifier
// passed. A round that failed or committed before the node's verdicts
// landed is still judged until its verdict window ends
// (ledger.Round.VerdictsUntil): its draw stands, and a late rejection
// suspends the trainer as a timely one does.
//
// The node never imports another role: the Replayer, which rebuilds a
// trainer's task from the job's canonical config and replays it, is given
// by the program that wires the node (internal/cli's fedtune verifier).
//
//	n, err := verifier.New(verifier.Config{Ledger: lc, Key: key, Replayer: r})
//	err = n.Run(ctx) // until ctx ends
//
// Its Prometheus metrics (Registry): fedtune_verifier_height (the last
// block followed), _rounds_total, _drawn_updates_total, _replays_total by
// result (match, mismatch, error), _mismatches_total, _verdicts_total by
// outcome (pass, reject; on the chain), _errors_total and the
// _replay_seconds histogram.
package verifier
