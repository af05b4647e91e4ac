package cli

import (
	"errors"

	"github.com/spf13/cobra"

	aggnode "github.com/fedtune/fedtune/aggregator/node"
)

func init() { register(newAggregatorCmd) }

func newAggregatorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "aggregator",
		Short: "Run a standalone aggregator for a coordinator",
	}
	cmd.AddCommand(newAggregatorStartCmd())
	return cmd
}

func newAggregatorStartCmd() *cobra.Command {
	var cfgPath string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "start --config FILE",
		Short: "Serve aggregations to the coordinator until interrupted",
		Long: `Start a standalone aggregator process: the Aggregator gRPC service that the
coordinator calls when its config has an "aggregator: {address, id}"
section. For each round it fetches the updates from the coordinator's
artifact service (digest-verified), aggregates them, uploads the new model
and server state back, and signs the aggregator's ledger transactions
(UpdateRejected, RoundCommitted, RoundFailed) with its own key, which must
be an active member of the ledger with role aggregator. Only the
coordinator named by coordinator_id may call it (TLS with ledger keys).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("aggregator start: --config is required")
			}
			cfg, err := aggnode.LoadConfig(cfgPath, func(c *aggnode.Config) { c.Insecure = c.Insecure || insecure })
			if err != nil {
				return err
			}
			srv, err := aggnode.NewServer(cmd.Context(), *cfg, nil, logger(cmd))
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "aggregator config YAML")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "serve and dial plain-text gRPC (no TLS); only on a trusted host")
	return cmd
}
