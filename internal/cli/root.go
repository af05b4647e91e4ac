package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/cobra"
)

var (
	registryMu sync.Mutex
	registry   []func() *cobra.Command
)

// register adds a top-level subcommand constructor. Each subcommand file
// calls it from init, so that files can be added without editing this one.
func register(newCmd func() *cobra.Command) {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry = append(registry, newCmd)
}

// NewRoot returns the fedtune root command with every registered subcommand.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "fedtune",
		Short:         "Federated fine-tuning network with ledger coordination",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	registryMu.Lock()
	cmds := make([]*cobra.Command, 0, len(registry))
	for _, f := range registry {
		cmds = append(cmds, f())
	}
	registryMu.Unlock()
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].Name() < cmds[j].Name() })
	root.AddCommand(cmds...)
	return root
}

// Run executes the fedtune command line args under ctx. Output goes to
// os.Stdout and os.Stderr.
func Run(ctx context.Context, args []string) error {
	return RunWith(ctx, args, os.Stdout, os.Stderr)
}

// RunWith is Run with explicit output streams, for tests.
func RunWith(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := NewRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	return readable(named(cmd, root, err))
}

// named prefixes err with the path of the command that failed ("ledger
// blocks: …") unless its text already starts with the command or its
// group, so that every error says which command it is from.
func named(cmd, root *cobra.Command, err error) error {
	if err == nil || cmd == nil || cmd == root {
		return err
	}
	path := strings.TrimPrefix(cmd.CommandPath(), root.Name()+" ")
	msg := err.Error()
	for _, p := range []string{path, cmd.Name(), strings.Fields(path)[0]} {
		if strings.HasPrefix(msg, p+":") || strings.HasPrefix(msg, p+" ") {
			return err
		}
	}
	return &readableError{msg: path + ": " + msg, err: err}
}

// logger returns a structured logger writing to cmd's error stream at the
// level named by the --log-level flag.
func logger(cmd *cobra.Command) *slog.Logger {
	var lvl slog.Level
	s, _ := cmd.Flags().GetString("log-level")
	if err := lvl.UnmarshalText([]byte(s)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
}
