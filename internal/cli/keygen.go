package cli

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/ledger"
)

func init() { register(newKeygenCmd) }

// newKeygenCmd is "fedtune keygen": make an ed25519 identity key.
func newKeygenCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen -o NAME.key",
		Short: "Generate an ed25519 identity key (PKCS#8 PEM, mode 0600) and print its ID",
		Long: `keygen writes a new ed25519 private key to the -o file as PKCS#8 PEM with
mode 0600 (making its folder if need be), and its public key beside it (NAME.pub, PKIX PEM, for genesis files
and "fedtune admin add-member --pubkey"). It prints the key's ID (the hex
SHA-256 of the raw public key) on the first line of its output, then the
public key PEM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("keygen: -o FILE is required")
			}
			if _, err := os.Stat(out); err == nil && !force {
				return fmt.Errorf("keygen: %s exists; refusing to overwrite a key (use --force)", out)
			}
			// The key's folder is made (0700) as the configs' instructions
			// assume (keygen -o devnet/keys/solo.key on a fresh checkout).
			if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			k, err := ledger.GenerateKey()
			if err != nil {
				return err
			}
			if err := ledger.SaveKey(out, k); err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			pub := k.Public().(ed25519.PublicKey)
			pubPath := strings.TrimSuffix(out, ".key") + ".pub"
			if err := ledger.SavePublicKey(pubPath, pub); err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			pem, err := ledger.EncodePublicKeyPEM(pub)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), ledger.KeyID(pub))
			fmt.Fprint(cmd.OutOrStdout(), string(pem))
			logger(cmd).Info("wrote key", "key", out, "public", pubPath)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "private key file to write (mode 0600)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing key file")
	return cmd
}
