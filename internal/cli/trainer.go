package cli

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

func init() { register(newTrainerCmd) }

func newTrainerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trainer",
		Short: "Run a trainer node: local data, local training, updates to the network",
	}
	cmd.AddCommand(newTrainerInitCmd(), newTrainerJoinCmd())
	return cmd
}

func newTrainerInitCmd() *cobra.Command {
	var c trainer.Config
	var dir string
	cmd := &cobra.Command{
		Use:   "init --dir DIR --data PATH --coordinator ADDR --ledger ADDR --genesis GENESIS.yaml",
		Short: "Write a fresh trainer key and config (DIR/trainer.key, DIR/trainer.yaml)",
		Long: `Write a new ed25519 key and a trainer config into DIR and print the key ID.
An admin must add the key to the ledger as a trainer member
(fedtune admin add-member --role trainer --pubkey DIR/trainer.pub) before
the trainer can join.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("trainer init: --dir is required")
			}
			if c.Data != "" {
				abs, err := filepath.Abs(c.Data)
				if err != nil {
					return err
				}
				c.Data = abs
			}
			if c.LedgerGenesis != "" {
				abs, err := filepath.Abs(c.LedgerGenesis)
				if err != nil {
					return err
				}
				if _, err := client.LoadPin(abs); err != nil {
					return fmt.Errorf("trainer init: --genesis: %w", err)
				}
				c.LedgerGenesis = abs
			} else {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: no --genesis: "+client.UnpinnedWarning)
			}
			c.KeyFile = "trainer.key"
			if err := c.Validate(); err != nil {
				return fmt.Errorf("trainer init: %w", err)
			}
			cfgPath := filepath.Join(dir, "trainer.yaml")
			if _, err := os.Stat(cfgPath); err == nil {
				return fmt.Errorf("trainer init: %s exists; not overwriting", cfgPath)
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			key, err := ledger.GenerateKey()
			if err != nil {
				return err
			}
			if err := ledger.SaveKey(filepath.Join(dir, "trainer.key"), key); err != nil {
				return err
			}
			pub := key.Public().(ed25519.PublicKey)
			if err := ledger.SavePublicKey(filepath.Join(dir, "trainer.pub"), pub); err != nil {
				return err
			}
			data, err := c.Encode()
			if err != nil {
				return err
			}
			if err := atomicfile.Write(cfgPath, data, 0o600); err != nil {
				return err
			}
			id := ledger.KeyID(pub)
			fmt.Fprintln(cmd.OutOrStdout(), id)
			// What to do next, on stderr: stdout is the key ID alone, for scripts.
			pubPath := filepath.Join(dir, "trainer.pub")
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s, %s and %s; your key ID is %s\n", filepath.Join(dir, "trainer.key"), pubPath, cfgPath, id)
			fmt.Fprintf(cmd.ErrOrStderr(), "next: an admin adds you (fedtune admin add-member --role trainer --pubkey %s --key ADMIN.key --addr LEDGER --genesis GENESIS.yaml),\n", pubPath)
			fmt.Fprintf(cmd.ErrOrStderr(), "then: fedtune trainer join --config %s\n", cfgPath)
			return nil
		},
	}
	d := trainer.DefaultConfig()
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "folder for the key, config and work files")
	f.StringVar(&c.Name, "name", "", "trainer name (logs and dataset manifest)")
	f.StringVar(&c.Data, "data", "", "local training data (text, folder of .txt, or JSONL)")
	f.StringVar(&c.Coordinator, "coordinator", "", "coordinator gRPC address")
	f.StringVar(&c.CoordinatorID, "coordinator-id", "", "coordinator key ID its TLS certificate must prove")
	f.StringVar(&c.Ledger, "ledger", defaultLedgerAddr, "ledger node gRPC address")
	f.StringVar(&c.LedgerGenesis, "genesis", "", "the chain's genesis file (ledger_genesis): pins the ledger node's key and the cosignatures a commit needs")
	f.StringVar(&c.Licence, "licence", d.Licence, "SPDX licence of the data")
	f.StringVar(&c.Source, "source", d.Source, "origin of the data, for its manifest")
	f.StringVar(&c.WorkDir, "work-dir", d.WorkDir, "work folder (relative to DIR)")
	f.BoolVar(&c.Insecure, "insecure", false, "plain-text gRPC to the coordinator (no TLS)")
	f.StringVar(&c.Device, "device", "", deviceUsage)
	return cmd
}

// deviceUsage documents --device.
const deviceUsage = "training device: cpu (the engine's step on the CPU, the default), host (the same), gorgonia (the Gorgonia reference graph, slower) or cuda (GPU 0; binaries built with -tags fedcuda)"

func newTrainerJoinCmd() *cobra.Command {
	var cfgPath, device string
	cmd := &cobra.Command{
		Use:   "join --config FILE",
		Short: "Register the local dataset, join the coordinator and train its tasks until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("trainer join: --config is required")
			}
			cfg, err := trainer.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("device") {
				if err := trainer.ValidateDevice(device); err != nil {
					return fmt.Errorf("trainer join: --device: %w", err)
				}
				cfg.Device = device
			}
			n, err := trainer.New(*cfg, trainer.Options{Logger: logger(cmd)})
			if err != nil {
				return err
			}
			dev := cfg.Device
			if dev == "" {
				dev = trainer.DeviceCPU
			}
			logger(cmd).Info("trainer starting", "id", n.ID(), "dataset", n.DatasetDigest(), "samples", n.Samples(), "device", dev)
			return n.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "trainer config YAML")
	cmd.Flags().StringVar(&device, "device", "", deviceUsage+"; overrides the config's device")
	return cmd
}
