package cli

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

func newAuditLicensesCmd() *cobra.Command {
	var addr, genesisPath, exportPath, format string
	cmd := &cobra.Command{
		Use:   "licenses MODEL-DIGEST [--addr ADDR | --export FILE] [--format table|json]",
		Short: "List every dataset and licence behind a model, and what each licence asks of its user",
		Long: "Walk the model's lineage back to its base model and list the base model's licence and every dataset a\n" +
			"contributor trained on (private or published) with its licence and the rounds that used it; then, for each\n" +
			"licence, what it asks of whoever uses the model: attribution (CC-BY, MIT, Apache-2.0, …), share-alike (-SA,\n" +
			"ODbL), non-commercial (-NC), no derivatives (-ND), copyleft (GPL family), use restrictions (OpenRAIL, Llama).\n" +
			"With --addr, a dataset whose licence a job that used it does not accept is marked.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var l *ledger.Lineage
			jobs := map[string]*ledger.JobRecord{}
			if exportPath != "" {
				e, err := readExportFile(exportPath)
				if err != nil {
					return fmt.Errorf("audit licenses: %w", err)
				}
				if l, err = audit.Lineage(ctx, e, args[0]); err != nil {
					return fmt.Errorf("audit licenses: %w", err)
				}
			} else {
				err := withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
					var err error
					if l, err = c.Lineage(ctx, args[0]); err != nil {
						return err
					}
					for _, rd := range l.Rounds {
						if _, ok := jobs[rd.JobID]; ok {
							continue
						}
						jr, err := c.Job(ctx, rd.JobID)
						if err != nil && !errors.Is(err, ledger.ErrRecordNotFound) {
							return err
						}
						jobs[rd.JobID] = jr
						if jr == nil {
							continue
						}
						for _, p := range jr.Recipe.Published {
							if slices.ContainsFunc(l.Datasets, func(d ledger.Dataset) bool { return d.Digest == p.Digest }) {
								continue
							}
							d, err := c.Dataset(ctx, p.Digest)
							if err != nil {
								return fmt.Errorf("published dataset %s of job %s: %w", p.Digest, rd.JobID, err)
							}
							l.Datasets = append(l.Datasets, *d)
						}
					}
					return nil
				})
				if err != nil {
					return fmt.Errorf("audit licenses %s: %w", args[0], err)
				}
			}
			return audit.Licences(l, jobs).Render(cmd.OutOrStdout(), format)
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&exportPath, "export", "", "read the chain from an export file (verified first) instead of a node")
	cmd.Flags().StringVar(&format, "format", "table", "output: table or json")
	return cmd
}
