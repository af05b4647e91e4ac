// Package devnet runs a whole fedtune network on one machine: three ledger
// nodes, a coordinator with its in-process aggregator and artifact store,
// and trainers each holding its own shipped dataset shard. Prepare writes
// everything a network needs into a folder (keys, genesis, TLS
// certificates, node, coordinator and trainer configs, a briefly
// pre-trained base model and the job file); Up starts the parts, as child
// processes of the fedtune binary (the default) or as goroutines of this
// process (Options.InProcess, for tests), launches the job, follows its
// rounds and returns the outcome; cancelling its context stops every part
// (SIGTERM to child processes, then wait).
package devnet
