package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model/engine"
)

func init() { register(newServeCmd) }

func newServeCmd() *cobra.Command {
	var modelDir, adapterDir, addr, keyPath, tokenFile, id, receiptsDir string
	var cfg inference.Config
	cmd := &cobra.Command{
		Use:   "serve --model DIR [--adapter DIR] --addr HOST:PORT [--key FILE]",
		Short: "Serve a model through OpenAI's API (/v1/models, /v1/completions, /v1/chat/completions)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logger(cmd)
			if modelDir == "" {
				return errors.New("serve: --model is required")
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
			m, err := inference.LoadModel(modelDir, adapterDir, id, engine.NewHost(), cfg.MaxConcurrent)
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			cfg.Logger = log
			s := inference.NewServer(m, cfg)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				s.Close()
				return fmt.Errorf("serve: %w", err)
			}
			hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
			fmt.Fprintf(cmd.OutOrStdout(), "serving %s on http://%s/v1/\n", m.ID, ln.Addr())
			log.Info("serving", "model", m.ID, "digest", m.Digest, "addr", ln.Addr().String(), "context", m.Context,
				"auth", cfg.AuthToken != "", "receipts", keyPath != "", "max_concurrent", cfg.MaxConcurrent, "max_queue", cfg.MaxQueue)
			errc := make(chan error, 1)
			go func() { errc <- hs.Serve(ln) }()
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
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model folder")
	f.StringVar(&adapterDir, "adapter", "", "LoRA adapter folder to merge in")
	f.StringVar(&addr, "addr", "127.0.0.1:8000", "address to listen on")
	f.StringVar(&keyPath, "key", "", "the node's ledger key: every answer then carries a receipt it signs (default: no receipts)")
	f.StringVar(&receiptsDir, "receipts-dir", "", "with --key: write each answer's receipt bundle (envelope, request, token ids, response) as DIR/<request-hash>.json, for audit receipt --replay")
	f.StringVar(&id, "model-id", "", "the model's name in the API (default: the served weights' digest)")
	f.StringVar(&tokenFile, "auth-token-file", "", "file holding the bearer token clients must send (default: no auth)")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 1<<20, "request body size at most (larger: 413)")
	f.IntVar(&cfg.MaxConcurrent, "max-concurrent", 16, "requests generating at once (decoded together, continuous batching)")
	f.IntVar(&cfg.MaxQueue, "max-queue", 64, "requests waiting for a slot at most (more: 429; -1: no queue)")
	f.DurationVar(&cfg.RequestTimeout, "request-timeout", 5*time.Minute, "a request's time at most (an answer is cut there)")
	f.IntVar(&cfg.DefaultMaxTokens, "default-max-tokens", 256, "max_tokens of a request that gives none")
	return cmd
}
