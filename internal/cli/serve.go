package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
)

func init() { register(newServeCmd) }

func newServeCmd() *cobra.Command {
	var modelDir, adapterDir, addr, keyPath, tokenFile, id, receiptsDir, device string
	var ledgerAddr, genesisPath, job, jobFile, artifactsAddr, artifactsID, fetchDir, coordAddr, coordID string
	var retry time.Duration
	var load inference.LoadOptions
	var cfg inference.Config
	cmd := &cobra.Command{
		Use:   "serve --model DIR [--adapter DIR] --addr HOST:PORT [--key FILE] | --model BASE-DIR --ledger ADDR --job ID --artifacts ADDR --artifacts-id ID --key FILE",
		Short: "Serve a model through OpenAI's API (/v1/models, /v1/completions, /v1/chat/completions)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logger(cmd)
			if modelDir == "" {
				return errors.New("serve: --model is required")
			}
			dev, err := parseDevice(device)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			if keyPath != "" {
				key, err := ledger.LoadKey(keyPath)
				if err != nil {
					return fmt.Errorf("serve: --key: %w", err)
				}
				cfg.Receipter = inference.Signer{Key: key, Dir: receiptsDir}
			} else if receiptsDir != "" {
				return errors.New("serve: --receipts-dir needs --key")
			}
			if receiptsDir != "" {
				if err := os.MkdirAll(receiptsDir, 0o755); err != nil {
					return fmt.Errorf("serve: --receipts-dir: %w", err)
				}
			}
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("serve: --auth-token-file: %w", err)
				}
				if cfg.AuthToken = strings.TrimSpace(string(b)); cfg.AuthToken == "" {
					return fmt.Errorf("serve: --auth-token-file %s is empty", tokenFile)
				}
			}
			cfg.Logger = log
			if ledgerAddr != "" {
				if job == "" || artifactsAddr == "" || adapterDir != "" {
					return errors.New("serve: --ledger needs --job and --artifacts (and no --adapter: the job's models are fetched)")
				}
				key, err := loadNodeKey(keyPath)
				if err != nil {
					return fmt.Errorf("serve: %w", err)
				}
				var check *coordinator.Job
				if jobFile != "" {
					if check, err = coordinator.LoadJob(jobFile); err != nil {
						return fmt.Errorf("serve: --job-file: %w", err)
					}
				}
				opt, err := tlsid.DialOption(key, tlsid.ExpectID(artifactsID))
				if err != nil {
					return fmt.Errorf("serve: %w", err)
				}
				ac, err := artifact.Dial(artifactsAddr, opt)
				if err != nil {
					return fmt.Errorf("serve: --artifacts: %w", err)
				}
				defer ac.Close()
				var coord coordinatorv1.CoordinatorClient
				if coordAddr != "-" {
					coordAddr, coordID = cmp.Or(coordAddr, artifactsAddr), cmp.Or(coordID, artifactsID)
					copt, err := tlsid.DialOption(key, tlsid.ExpectID(coordID))
					if err != nil {
						return fmt.Errorf("serve: --coordinator-id: %w", err)
					}
					conn, err := grpc.NewClient(coordAddr, copt)
					if err != nil {
						return fmt.Errorf("serve: --coordinator: %w", err)
					}
					defer conn.Close()
					coord = coordinatorv1.NewCoordinatorClient(conn)
				}
				if fetchDir == "" {
					if fetchDir, err = os.MkdirTemp("", "fedtune-serve-"); err != nil {
						return err
					}
					defer os.RemoveAll(fetchDir)
				} else if err := os.MkdirAll(fetchDir, 0o755); err != nil {
					return err
				}
				if id == "" {
					id = job
				}
				return withClient(cmd.Context(), ledgerAddr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
					f := &follower{c: c, ac: ac, coord: coord, coordID: coordID, job: job, base: modelDir, check: check, dir: fetchDir, id: id,
						slots: cfg.MaxConcurrent, loadOpt: load, device: dev, log: log, retry: retry}
					m, err := f.start(cmd.Context())
					if err != nil {
						return fmt.Errorf("serve: job %s: %w", job, err)
					}
					return serveModel(cmd, m, cfg, addr, dev.name, f.follow)
				})
			}
			if fi, err := os.Stat(filepath.Join(modelDir, model.ConfigFile)); err != nil || fi.IsDir() {
				return fmt.Errorf("serve: --model %s is not a model folder (no %s; fedtune model init or model import writes one)", modelDir, model.ConfigFile)
			}
			if adapterDir != "" {
				if fi, err := os.Stat(filepath.Join(adapterDir, model.AdapterConfigFile)); err != nil || fi.IsDir() {
					return fmt.Errorf("serve: --adapter %s is not a LoRA adapter folder (no %s)", adapterDir, model.AdapterConfigFile)
				}
			}
			m, err := dev.loadModel(modelDir, adapterDir, id, cfg.MaxConcurrent, load)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			return serveModel(cmd, m, cfg, addr, dev.name, nil)
		},
	}

	f := cmd.Flags()
	f.BoolVar(&load.BF16Weights, "bf16-weights", false, "keep a BF16 checkpoint's weights in bfloat16: half the memory, slower decoding (same answers)")
	f.StringVar(&modelDir, "model", "", "model folder")
	f.StringVar(&device, "device", "host", deviceHelp+". Answers on the GPU agree with the Host's to float32 rounding, not bit for bit: audit receipt --replay must use the device that served (receipts do not record it)")
	f.StringVar(&adapterDir, "adapter", "", "LoRA adapter folder to merge in")
	f.StringVar(&addr, "addr", "127.0.0.1:8000", "address to listen on")
	f.StringVar(&keyPath, "key", "", "the node's ledger key: every answer then carries a receipt it signs (default: no receipts)")
	f.StringVar(&receiptsDir, "receipts-dir", "", "with --key: write each answer's receipt bundle (envelope, request, token ids, response) as DIR/<request-hash>.json (a later answer to the same body: DIR/<request-hash>-<envelope-hash>.json), for audit receipt --replay")
	f.StringVar(&id, "model-id", "", "the model's name in the API (default: the served weights' digest)")
	f.StringVar(&tokenFile, "auth-token-file", "", "file holding the bearer token clients must send (default: no auth)")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 1<<20, "request body size at most (larger: 413)")
	f.IntVar(&cfg.MaxConcurrent, "max-concurrent", 16, "requests generating at once (decoded together, continuous batching)")
	f.IntVar(&cfg.MaxQueue, "max-queue", 64, "requests waiting for a slot at most (more: 429; -1: no queue)")
	f.DurationVar(&cfg.RequestTimeout, "request-timeout", 5*time.Minute, "a request's time at most (an answer is cut there)")
	f.DurationVar(&cfg.BodyTimeout, "body-timeout", 30*time.Second, "time to receive a request's body at most (slower: 408)")
	f.DurationVar(&cfg.SendGrace, "send-grace", 10*time.Second, "after --request-timeout, time to send the rest of an answer at most (a client that stops reading then loses it)")
	f.IntVar(&cfg.DefaultMaxTokens, "default-max-tokens", 256, "max_tokens of a request that gives none")
	f.StringVar(&ledgerAddr, "ledger", "", "gRPC address of a ledger node: follow --job's committed rounds on the ledger's block stream and serve each new global model (LoRA adapter or full weights) on the --model base folder, which must hold the job's registered base model")
	genesisFlag(cmd, &genesisPath)
	f.StringVar(&job, "job", "", "with --ledger: the job whose committed global models are served; its settings (LoRA rank, alpha, targets, base model) are read from the ledger and the job config it commits by digest")
	f.StringVar(&jobFile, "job-file", "", "with --ledger, optional: the job's YAML, refused unless its config digest is the one the ledger's rounds record; used only where the artifact store does not hold the job's config")
	f.StringVar(&artifactsAddr, "artifacts", "", "with --ledger: the artifact store's gRPC address (TLS with --key)")
	f.StringVar(&artifactsID, "artifacts-id", "", "with --ledger: the artifact store's key ID, checked in the TLS handshake")
	f.StringVar(&coordAddr, "coordinator", "", "with --ledger: the job's coordinator's gRPC address, asked for the eval losses of rounds with no RoundEvaluated on the ledger (shown as the coordinator's; default: --artifacts; \"-\": none)")
	f.StringVar(&coordID, "coordinator-id", "", "with --coordinator: its key ID, checked in the TLS handshake (default: --artifacts-id)")
	f.StringVar(&fetchDir, "fetch-dir", "", "with --ledger: folder for the fetched models (default: a temporary folder)")
	f.DurationVar(&retry, "retry", 500*time.Millisecond, "with --ledger: first wait before the block stream is reopened or a refused round is tried again (doubling up to 30s)")
	return cmd
}

// serveModel serves m (on the device named device) on addr until the command's context ends, running
// bg (when set) beside it with a context that ends with the serving.
func serveModel(cmd *cobra.Command, m *inference.Model, cfg inference.Config, addr, device string, bg func(context.Context, *inference.Server)) error {
	log := cfg.Logger
	_, signs := cfg.Receipter.(inference.Signer)
	s := inference.NewServer(m, cfg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.Close()
		return fmt.Errorf("serve: %w", err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	fmt.Fprintf(cmd.OutOrStdout(), "serving %s on http://%s/v1/\n", m.ID, ln.Addr())
	log.Info("serving", "model", m.ID, "digest", m.Digest, "addr", ln.Addr().String(), "device", device, "context", m.Context,
		"auth", cfg.AuthToken != "", "receipts", signs, "max_concurrent", cfg.MaxConcurrent, "max_queue", cfg.MaxQueue)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	if bg != nil {
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		go bg(ctx, s)
	}
	select {
	case err = <-errc:
	case <-cmd.Context().Done():
		log.Info("shutting down: finishing requests in flight")
		ctx, cancel := context.WithTimeout(context.Background(), cfg.RequestTimeout+5*time.Second)
		err = hs.Shutdown(ctx)
		cancel()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return errors.Join(err, s.Close())
}
