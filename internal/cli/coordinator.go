package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/coordinator"
)

func init() { register(newCoordinatorCmd) }

func newCoordinatorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run the coordinator (with its aggregator and artifact store)",
	}
	cmd.AddCommand(newCoordinatorStartCmd())
	return cmd
}

func newCoordinatorStartCmd() *cobra.Command {
	var cfgPath, job string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "start --config FILE",
		Short: "Serve trainers, run jobs' rounds and aggregate until interrupted",
		Long: `Start the coordinator process: the Coordinator gRPC service (trainers join,
receive tasks and report updates; operators launch jobs), the artifact
service over the process's content-addressed store, and the aggregator,
which runs in-process unless the config names a standalone one
("aggregator: {address, id}", see fedtune aggregator start). Rounds are
recorded on the ledger with the coordinator and aggregator keys. A restarted coordinator resumes its
unfinished job from the ledger's round records.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("coordinator start: --config is required")
			}
			cfg, err := coordinator.LoadServerConfig(cfgPath)
			if err != nil {
				return err
			}
			if insecure {
				cfg.Insecure = true
			}
			if job != "" {
				cfg.Job = job
			}
			srv, err := coordinator.NewServer(cmd.Context(), *cfg, nil, logger(cmd))
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "coordinator config YAML")
	cmd.Flags().StringVar(&job, "job", "", "job YAML to launch at start (unless one is being resumed)")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "serve plain-text gRPC (no TLS); only on a trusted host")
	return cmd
}
