// Package devnet runs a whole fedtune network on one machine (fedtune
// devnet up): three ledger nodes, a coordinator with its artifact store and
// its in-process aggregator (or a standalone one), and trainers each
// holding its own shipped dataset shard.
//
// Prepare writes everything a network needs into a folder: keys, genesis,
// TLS certificates, the parts' configs (built from their own config types:
// ledger/node.Config, coordinator.ServerConfig, the aggregator's and
// trainer's Config), a briefly pre-trained base model and the job file. Up
// starts the parts, as child processes of the fedtune binary (the default)
// or as goroutines of this process (Options.InProcess, for tests), runs the
// job to its end (RunJob: launch, follow the rounds, read the lineage,
// evaluate, then Serve: an inference node in this process, a genesis member
// with role inference, serves the final model (a LoRA adapter merged into
// the base, or a full fine-tune's weights on the base's config and
// tokenizer) with the block that committed it, answers one chat request and its receipt is checked with
// Options.VerifyReceipt) and stops the parts; cancelling its context stops them too
// (SIGTERM to child processes, then wait). UpKeep (Options.Keep, devnet up
// --keep) keeps the network up after the job until its context ends, and
// writes a guide (WriteGuide): the addresses, files and exact commands
// that join a new trainer, launch another job, audit the model, serve it
// and audit an answer's receipt. Start
// and StartLedgers start the parts alone, for tests that drive the network
// themselves.
package devnet
