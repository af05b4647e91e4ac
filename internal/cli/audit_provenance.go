package cli

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

func newAuditProvenanceCmd() *cobra.Command {
	var addr, genesisPath, exportPath, format, out, keyPath string
	var quorum int
	cmd := &cobra.Command{
		Use:   "provenance MODEL-DIGEST --format in-toto|spdx|cyclonedx (--ledger ADDR [--genesis FILE] [--quorum N] | --export FILE) [-o FILE] [--key KEY]",
		Short: "Write a model's provenance as an in-toto statement (DSSE-signed), an SPDX 3.0 document or a CycloneDX 1.6 ML-BOM",
		Long: "Write the provenance of a model, built from its lineage on the ledger (base model, rounds with strategy,\n" +
			"parameters, contributors and weights, datasets with licences and Merkle roots):\n" +
			"  in-toto    an in-toto Statement v1 in the OpenSSF model signing v1.0 shape (predicate type\n" +
			"             https://model_signing/signature/v1.0: the model's files with their SHA-256 as resources, one\n" +
			"             subject whose sha256 covers them), the lineage under predicate.fedtune, in a DSSE envelope\n" +
			"             signed with --key (payload type application/vnd.in-toto+json);\n" +
			"  spdx       an SPDX 3.0.1 JSON-LD document with the AI, Dataset and Build profiles;\n" +
			"  cyclonedx  a CycloneDX 1.6 ML-BOM (machine-learning-model with a model card, data components,\n" +
			"             the lineage as pedigree ancestors and dependencies).\n" +
			"The output is deterministic: the only time in it is that of the block that recorded the model.\n" +
			"--export reads a chain exported by `fedtune audit export` and verifies it in full first; --ledger reads\n" +
			"from a node (trusted unless --quorum N: see `fedtune audit lineage`).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fail := func(err error) error { return fmt.Errorf("audit provenance %s: %w", args[0], err) }
			if !slices.Contains(audit.ProvenanceFormats, format) {
				return fail(fmt.Errorf("--format %q: want one of %s", format, strings.Join(audit.ProvenanceFormats, ", ")))
			}
			fromNode := cmd.Flags().Changed("ledger") || cmd.Flags().Changed("addr")
			if fromNode == (exportPath != "") {
				return fail(errors.New("give exactly one of --ledger ADDR or --export FILE"))
			}
			if err := checkQuorumFlags(quorum, genesisPath); err != nil {
				return fail(err)
			}
			if quorum > 0 && exportPath != "" {
				return fail(errors.New("--quorum reads from a node; an --export file is verified in full instead"))
			}
			var key ed25519.PrivateKey
			if format == "in-toto" {
				if keyPath == "" {
					return fail(errors.New("--format in-toto is DSSE-signed: give the auditor's key with --key"))
				}
				var err error
				if key, err = ledger.LoadKey(keyPath); err != nil {
					return fail(fmt.Errorf("--key: %w", err))
				}
			}
			ctx := cmd.Context()
			var p *audit.Provenance
			if exportPath != "" {
				e, err := readExportFile(exportPath)
				if err != nil {
					return fail(err)
				}
				if p, err = audit.ProvenanceFromExport(ctx, e, args[0]); err != nil {
					return fail(err)
				}
			} else {
				err := withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
					l, err := c.Lineage(ctx, args[0])
					if err != nil {
						return err
					}
					if quorum > 0 {
						rep, err := anchorLineage(ctx, c, l, args[0], quorum, genesisPath, cmd.ErrOrStderr())
						if err != nil {
							return err
						}
						l = rep.Lineage
					}
					chainID := ""
					if genesisPath != "" {
						g, err := ledger.LoadGenesis(genesisPath)
						if err != nil {
							return err
						}
						chainID = g.ChainID
					} else {
						st, err := c.Status(ctx)
						if err != nil {
							return fmt.Errorf("status: %w", err)
						}
						chainID = st.ChainId
					}
					p, err = audit.ProvenanceFromNode(ctx, c, l, chainID, quorum)
					return err
				})
				if err != nil {
					return fail(err)
				}
			}
			var b bytes.Buffer
			if err := audit.WriteProvenance(&b, p, format, key); err != nil {
				return fail(err)
			}
			if out == "" || out == "-" {
				_, err := cmd.OutOrStdout().Write(b.Bytes())
				return err
			}
			if err := atomicfile.Write(out, b.Bytes(), 0o644); err != nil {
				return fail(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s provenance of %s (%d rounds, %d datasets) to %s\n", format, args[0], len(p.Lineage.Rounds), len(p.Lineage.Datasets), out)
			return nil
		},
	}
	quorumFlags(cmd, &quorum, &genesisPath)
	cmd.Flags().StringVar(&addr, "ledger", defaultLedgerAddr, "gRPC address of a ledger node")
	cmd.Flags().StringVar(&addr, "addr", defaultLedgerAddr, "the same as --ledger")
	cmd.Flags().StringVar(&exportPath, "export", "", "read the chain from an export file (verified first) instead of a node")
	cmd.Flags().StringVar(&format, "format", "", "output: "+strings.Join(audit.ProvenanceFormats, ", "))
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (default: standard output)")
	cmd.Flags().StringVar(&keyPath, "key", "", "the auditor's ed25519 key (PKCS#8 PEM) that signs the in-toto statement's DSSE envelope")
	return cmd
}
