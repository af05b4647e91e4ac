// Package spotcheck wires the verifier node (package verifier) to the
// training code: its Replayer rebuilds, from the ledger and the artifact
// store alone, the task a trainer was given in a round (the job's
// canonical config by the round's config digest, the job's base model by
// the weight and config digests the ledger records, fetched, checked and
// cached by FoundationSource, the round's base weights or adapter, the
// trainer's seed), fetches and checks the published
// samples the round gave the trainer, replays the local training on the
// Host engine (trainer.Replay: the same bits on every CPU) and turns the
// comparison with the trainer's commitment into a verdict naming the
// first step that differs.
//
// Task is the task-rebuilding half, shared with fedtune audit replay.
//
// It is a program package (it imports the coordinator's job format and
// the trainer's replay), so the verifier role stays free of both.
package spotcheck
