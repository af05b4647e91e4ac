// Command fedtune is the single binary of the fedtune federated fine-tuning
// network: ledger nodes, coordinator, aggregator, trainers and the tools that
// audit them are all subcommands. See "fedtune help".
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fedtune/fedtune/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fedtune:", err)
		os.Exit(1)
	}
}
