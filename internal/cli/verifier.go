package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/spotcheck"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/verifier"
)

func init() { register(newVerifierCmd) }

func newVerifierCmd() *cobra.Command {
	var (
		ledgerAddr, genesisPath, keyPath, workDir, modelDir, metricsAddr, cacheDir string
		from                                                                       uint64
		af                                                                         artifactsFlags
	)
	cmd := &cobra.Command{
		Use:   "verifier --ledger ADDR --key FILE --artifacts ADDR --artifacts-id ID --work-dir DIR [--model DIR]",
		Short: "Run a verifier node: replay the drawn updates of jobs that name this verifier and sign the verdicts",
		Long: "A verifier is a ledger member with role verifier (admitted by an admin's MemberAdded) that a job names in its\n" +
			"verify section. It follows the ledger's blocks; when a job's coordinator closes a round's submissions\n" +
			"(SubmissionsClosed), the hash of that block draws the updates to check (the job's fraction of them, all trained\n" +
			"on its published data). For each drawn update it rebuilds the trainer's task from the ledger and the artifact store\n" +
			"(the job's canonical config; the job's base model, fetched by the digests the ledger records, checked and cached\n" +
			"under --cache, which several verifiers may share; the round's weights or adapter; the published samples the round gave the\n" +
			"trainer), replays the training on the Host engine and signs UpdateVerified when it matches bit for bit, or\n" +
			"UpdateRejected naming the first step that differs. Runs until interrupted.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			for _, f := range []struct{ name, v string }{{"--ledger", ledgerAddr}, {"--key", keyPath}, {"--work-dir", workDir}} {
				if f.v == "" {
					return fmt.Errorf("verifier: %s is required", f.name)
				}
			}
			key, err := ledger.LoadKey(keyPath)
			if err != nil {
				return fmt.Errorf("verifier: --key: %w", err)
			}
			ac, err := af.dial(key)
			if err != nil {
				return fmt.Errorf("verifier: %w", err)
			}
			defer ac.Close()
			if cacheDir == "" {
				cacheDir = filepath.Join(workDir, "models")
			}
			st, err := artifact.OpenStore(filepath.Join(workDir, "artifacts"))
			if err != nil {
				return fmt.Errorf("verifier: --work-dir: %w", err)
			}
			log := logger(cmd)
			return withClient(ctx, ledgerAddr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				n, err := verifier.New(verifier.Config{Ledger: c, Key: key, From: from, Logger: log,
					Replayer: &spotcheck.Replayer{Ledger: c, Artifacts: ac, Store: st, ModelDir: modelDir,
						CacheDir: cacheDir, WorkDir: filepath.Join(workDir, "replays"), Logger: log}})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "verifier %s following the ledger at %s\n", n.ID(), ledgerAddr)
				if metricsAddr != "" {
					ln, err := net.Listen("tcp", metricsAddr)
					if err != nil {
						return fmt.Errorf("verifier: --metrics: %w", err)
					}
					mux := http.NewServeMux()
					mux.Handle("GET /metrics", promhttp.HandlerFor(n.Registry(), promhttp.HandlerOpts{}))
					hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
					go func() { _ = hs.Serve(ln) }()
					defer hs.Close()
					log.Info("metrics", "addr", ln.Addr().String())
				}
				err = n.Run(ctx)
				if errors.Is(err, context.Canceled) {
					return nil
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&ledgerAddr, "ledger", "", "gRPC address of a ledger node")
	genesisFlag(cmd, &genesisPath)
	f.StringVar(&keyPath, "key", "", "the verifier's ledger key (a member with role verifier)")
	f.StringVar(&workDir, "work-dir", "", "folder for fetched artifacts and the replays in progress")
	f.StringVar(&modelDir, "model", "", "a local copy of the jobs' base model folder; its weights must have the digest the job's recipe records (default: fetched from the artifact store by the ledger's digests)")
	f.StringVar(&cacheDir, "cache", "", "folder of the base models fetched by the ledger's digests (default: --work-dir/models); several verifiers may share one")
	f.StringVar(&metricsAddr, "metrics", "", "host:port to serve Prometheus /metrics on (default: none)")
	f.Uint64Var(&from, "from", 1, "first block height to follow (open rounds closed earlier are judged too)")
	af.add(cmd)
	return cmd
}
