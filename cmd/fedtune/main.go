// Command fedtune is the single binary of the fedtune federated fine-tuning
// network: ledger nodes, coordinator, aggregator, trainers and the tools that
// audit them are all subcommands. See "fedtune help".
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/fedtune/fedtune/internal/cli"
)

// ledgerGCPercent is the garbage collector's target (GOGC) of a "fedtune
// ledger start" process unless GOGC is set. A ledger node under load
// allocates fast (decoded txs, gRPC and raft messages, pebble batches)
// while its live heap stays small, so Go's default of 100 collects very
// often: in make bench-ledger at 256 clients, 300 takes about a tenth of
// the CPU time off each committed tx, for a heap of about 110 MiB per node.
// It is set here, for the node's own process, not in package ledger/node,
// which also runs inside tests and other programs.
const ledgerGCPercent = 300

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "ledger" && os.Args[2] == "start" && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(ledgerGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fedtune:", err)
		os.Exit(1)
	}
}
