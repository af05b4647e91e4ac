package cli

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

func init() { register(newAdminCmd) }

// newAdminCmd is "fedtune admin": admin-signed ledger transactions.
func newAdminCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Sign and submit ledger membership transactions with an admin key",
	}
	cmd.AddCommand(newAdminAddMemberCmd(), newAdminRemoveMemberCmd())
	return cmd
}

// submitSigned signs body with the key in keyPath using the signer's next
// nonce and the node's chain ID, submits it and waits for its fate; the
// node is pinned by genesisPath when given (withClient).
func submitSigned(cmd *cobra.Command, addr, genesisPath, keyPath string, body ledger.TxBody) error {
	key, err := ledger.LoadKey(keyPath)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	return withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
		st, err := c.Status(ctx)
		if err != nil {
			return fmt.Errorf("status of %s: %w", addr, err)
		}
		signer := ledger.KeyID(key.Public().(ed25519.PublicKey))
		nonce, err := c.Nonce(ctx, signer)
		if err != nil {
			return err
		}
		env, err := ledger.SignTx(key, st.ChainId, nonce+1, body)
		if err != nil {
			return err
		}
		h := ledger.TxHash(env)
		height, err := c.SubmitWait(ctx, env)
		if err != nil {
			return fmt.Errorf("%s tx %x: %w", body.TxType(), h, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s committed at height %d: tx %x\n", body.TxType(), height, h)
		return nil
	})
}

func newAdminAddMemberCmd() *cobra.Command {
	var addr, genesisPath, role, pubFile, keyFile, name string
	cmd := &cobra.Command{
		Use:   "add-member --role ROLE --pubkey FILE --key ADMIN.key",
		Short: "Add a member with a role (admin, coordinator, aggregator, trainer, auditor, inference, verifier)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role == "" || pubFile == "" || keyFile == "" {
				return errors.New("admin add-member: --role, --pubkey and --key are required")
			}
			if !ledger.Role(role).Valid() {
				return fmt.Errorf("admin add-member: unknown role %q (want admin, coordinator, aggregator, trainer, auditor, inference or verifier)", role)
			}
			pub, err := ledger.LoadPublicKey(pubFile)
			if err != nil {
				return fmt.Errorf("admin add-member: %w", err)
			}
			body := ledger.MemberAdded{PublicKey: hex.EncodeToString(pub), Role: ledger.Role(role), Name: name}
			if err := submitSigned(cmd, addr, genesisPath, keyFile, body); err != nil {
				return fmt.Errorf("admin add-member: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "member %s (%s)\n", ledger.KeyID(pub), role)
			return nil
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&role, "role", "", "the member's role")
	cmd.Flags().StringVar(&pubFile, "pubkey", "", "the member's public key (PEM, or its private key file)")
	cmd.Flags().StringVar(&keyFile, "key", "", "the admin's private key, which signs the tx")
	cmd.Flags().StringVar(&name, "name", "", "a name for the member")
	return cmd
}

func newAdminRemoveMemberCmd() *cobra.Command {
	var addr, genesisPath, id, keyFile, reason string
	cmd := &cobra.Command{
		Use:   "remove-member --id ID --key ADMIN.key [--reason TEXT]",
		Short: "Remove a member",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || keyFile == "" {
				return errors.New("admin remove-member: --id and --key are required")
			}
			if err := submitSigned(cmd, addr, genesisPath, keyFile, ledger.MemberRemoved{ID: id, Reason: reason}); err != nil {
				return fmt.Errorf("admin remove-member: %w", err)
			}
			return nil
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&id, "id", "", "the member's ID")
	cmd.Flags().StringVar(&keyFile, "key", "", "the admin's private key, which signs the tx")
	cmd.Flags().StringVar(&reason, "reason", "", "why")
	return cmd
}
