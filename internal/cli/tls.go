package cli

import (
	"errors"
	"fmt"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/spf13/cobra"
)

func init() { register(newTLSCmd) }

func newTLSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "TLS certificates tied to ledger keys",
	}
	var keyPath, out string
	cert := &cobra.Command{
		Use:   "cert --key KEY -o cert.pem",
		Short: "Write the self-signed TLS certificate of a ledger key (CN and URI SAN name its key ID)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyPath == "" || out == "" {
				return errors.New("tls cert: --key and -o are required")
			}
			k, err := ledger.LoadKey(keyPath)
			if err != nil {
				return fmt.Errorf("tls cert: %w", err)
			}
			pem, err := tlsid.CertificatePEM(k)
			if err != nil {
				return fmt.Errorf("tls cert: %w", err)
			}
			if err := atomicfile.Write(out, pem, 0o644); err != nil {
				return fmt.Errorf("tls cert: %w", err)
			}
			return nil
		},
	}
	cert.Flags().StringVar(&keyPath, "key", "", "ed25519 key (PKCS#8 PEM)")
	cert.Flags().StringVarP(&out, "output", "o", "", "certificate file to write")
	cmd.AddCommand(cert)
	return cmd
}
