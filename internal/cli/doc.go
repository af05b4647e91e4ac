// Package cli is the fedtune command line: every subcommand of the fedtune
// binary (ledger, coordinator, aggregator, trainer, round, audit, devnet,
// the standalone train, eval, generate and aggregate tools, …) and the
// flags that fill each part's config. It is a program: it may import every
// other fedtune package, and none imports it.
//
// cmd/fedtune calls Run with the process's arguments under a context that
// Ctrl-C and SIGTERM cancel; tests call RunWith with their own output
// streams and run commands in process. Each top-level subcommand lives in
// its own file and registers its constructor from init with register;
// NewRoot builds the tree.
package cli
