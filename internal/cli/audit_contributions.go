package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

func newAuditContributionsCmd() *cobra.Command {
	var ledgerAddr, genesisPath, exportPath, plotPath string
	cmd := &cobra.Command{
		Use:   "contributions JOB [--ledger ADDR --genesis FILE | --export FILE] [--plot FILE.svg|FILE.png]",
		Short: "Print each contributor's score per round (the loss its update alone removes on the job's eval set) and plot it",
		Long: "Print, for every committed round of JOB, the held-out eval loss its RoundEvaluated recorded and each\n" +
			"contributor's score: the mean NLL of the round's starting model minus that of the starting model with the\n" +
			"contributor's update alone applied, as the job's coordinator computed and signed it. SHARE is the\n" +
			"contributor's part of the loss the round's contributors removed (negative scores count as 0).\n" +
			"--export reads a chain export (verified first); otherwise the node at --ledger is asked (pinned to the\n" +
			"nodes of --genesis). --plot writes a bar chart (SVG with labels, or PNG).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			job := args[0]
			ctx := cmd.Context()
			var rounds []ledger.Round
			if exportPath != "" {
				if cmd.Flags().Changed("ledger") || genesisPath != "" {
					return errors.New("audit contributions: give --export or --ledger/--genesis, not both")
				}
				e, err := readExportFile(exportPath)
				if err != nil {
					return fmt.Errorf("audit contributions: %w", err)
				}
				if rounds, err = audit.Rounds(ctx, e, job); err != nil {
					return fmt.Errorf("audit contributions: %w", err)
				}
			} else {
				err := withClient(ctx, ledgerAddr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
					var err error
					rounds, err = c.Rounds(ctx, job)
					return err
				})
				if err != nil {
					return fmt.Errorf("audit contributions %s: %w", job, err)
				}
				if len(rounds) == 0 {
					return fmt.Errorf("audit contributions: job %q has no rounds on the ledger at %s", job, ledgerAddr)
				}
			}
			rs := audit.Contributions(rounds)
			if err := audit.RenderContributions(cmd.OutOrStdout(), job, rs); err != nil {
				return err
			}
			if plotPath != "" {
				if err := audit.WriteContributionsPlot(plotPath, job, rs); err != nil {
					return fmt.Errorf("audit contributions: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "plot written to %s\n", plotPath)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ledgerAddr, "ledger", defaultLedgerAddr, "gRPC address of a ledger node")
	cmd.Flags().StringVar(&genesisPath, "genesis", "", "genesis file: pin the ledger node's TLS key to its nodes")
	cmd.Flags().StringVar(&exportPath, "export", "", "read the chain from an export file (verified first) instead of a node")
	cmd.Flags().StringVar(&plotPath, "plot", "", "write a bar chart of the scores to this .svg or .png file")
	return cmd
}
