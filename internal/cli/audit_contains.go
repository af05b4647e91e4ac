package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

func newAuditContainsCmd() *cobra.Command {
	var cf coordinatorFlags
	var ledgerAddr, modelDigest, samplePath, sampleFormat, format, genesisPath, artifactsAddr, artifactsID string
	var quorum int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "contains --model DIGEST --sample FILE [--ledger ADDR [--quorum N [--genesis FILE]]] [--coordinator ADDR --key KEY --coordinator-id ID | --insecure]",
		Short: "Ask every dataset behind a model whether a sample was in it, and check each proof against the ledger",
		Long: "Hash the sample as the dataset loader defines one (--sample-format text: the file without a leading BOM and\n" +
			"trailing line breaks, as `dataset prove --sample`; jsonl: the file's one JSONL record), read the model's\n" +
			"lineage from the ledger, and ask every dataset behind it, through the coordinator and the trainer that holds\n" +
			"it, for an inclusion or exclusion proof. Only the sample's hash leaves this machine. Every proof is checked\n" +
			"here against the Merkle root and sample count the ledger recorded; neither coordinator nor trainers are\n" +
			"trusted. Each dataset is included, excluded, or unanswered (trainer not connected, timeout, refused, or the\n" +
			"proof does not verify). Exits non-zero when any dataset is unanswered.\n\n" +
			"What the results rest on: the lineage and every dataset's root and sample count are read from the one ledger\n" +
			"node named by --ledger, which is trusted unless --quorum N is given: then every fact of the lineage, each\n" +
			"dataset's root and sample count included, is checked against the signed tx that recorded it, in a block\n" +
			"carrying at least N valid node cosignatures (only the nodes of the --genesis file count, if given), and the\n" +
			"proofs are checked against those anchored roots; nothing is asked when any fact does not match.\n" +
			"\"included\" means the sample is a leaf of the tree whose root the ledger records. \"excluded\" means the\n" +
			"sample is not in the tree its owner registered, assuming the owner built it as the manifest format requires\n" +
			"(over sorted leaves): the ledger keeps only the root, so an owner that registered a tree built otherwise could\n" +
			"hide a sample.\n\n" +
			"A published dataset is not asked of its owner: its leaves file, which every member may read, is fetched from\n" +
			"the artifact store (--artifacts, default the coordinator's) and the proof is built and checked here.\n\n" +
			"The key given with --key must be an active auditor or admin member of the ledger (or the coordinator's own);\n" +
			"datasets are asked in batches of 64.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDigest == "" || samplePath == "" {
				return errors.New("audit contains: --model and --sample are required")
			}
			if format != "table" && format != "json" {
				return fmt.Errorf("audit contains: --format %q is not one of %s", format, strings.Join(audit.ContainsFormats, ", "))
			}
			if err := checkQuorumFlags(quorum, genesisPath); err != nil {
				return fmt.Errorf("audit contains: %w", err)
			}
			if timeout <= 0 {
				return fmt.Errorf("audit contains: --timeout %s must be positive", timeout)
			}
			leaf, err := audit.SampleLeaf(samplePath, sampleFormat)
			if err != nil {
				return fmt.Errorf("audit contains: sample: %w", err)
			}
			ctx := cmd.Context()
			var l *ledger.Lineage
			var anchored *audit.AnchorReport
			err = withClient(ctx, ledgerAddr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				var err error
				if l, err = c.Lineage(ctx, modelDigest); err != nil || quorum == 0 {
					return err
				}
				// The datasets, and so the roots the proofs are checked
				// against, are then those rebuilt from the anchored txs.
				if anchored, err = anchorLineage(ctx, c, l, modelDigest, quorum, genesisPath, cmd.ErrOrStderr()); err != nil {
					return err
				}
				l = anchored.Lineage
				return nil
			})
			if err != nil {
				return fmt.Errorf("audit contains: lineage of %s: %w", modelDigest, err)
			}
			ds := audit.LineageDatasets(l)
			if len(ds) == 0 {
				return fmt.Errorf("audit contains: the lineage of %s names no datasets (a base model, not a fine-tuned one?)", modelDigest)
			}
			cc, closeFn, err := cf.dial()
			if err != nil {
				return fmt.Errorf("audit contains: %w", err)
			}
			defer closeFn()
			var leaves audit.LeavesSource
			if slices.ContainsFunc(ds, func(d ledger.Dataset) bool { return d.Published }) {
				ac, err := cf.dialArtifacts(artifactsAddr, artifactsID)
				if err != nil {
					return fmt.Errorf("audit contains: artifact store: %w", err)
				}
				defer ac.Close()
				leaves = ac
			}
			rep, err := audit.ContainsWithLeaves(ctx, cc, leaves, l.Model.Digest, leaf, ds, timeout)
			if err != nil {
				return fmt.Errorf("audit contains: %w", err)
			}
			rep.Anchored = anchored
			if err := audit.RenderContains(cmd.OutOrStdout(), rep, format); err != nil {
				return fmt.Errorf("audit contains: %w", err)
			}
			if err := rep.Err(); err != nil {
				return fmt.Errorf("audit contains: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ledgerAddr, "ledger", defaultLedgerAddr, "gRPC address of a ledger node (the lineage and the trusted roots)")
	quorumFlags(cmd, &quorum, &genesisPath)
	cf.add(cmd)
	cmd.Flags().StringVar(&modelDigest, "model", "", "digest of the model whose datasets to ask")
	cmd.Flags().StringVar(&samplePath, "sample", "", "file holding the sample")
	cmd.Flags().StringVar(&sampleFormat, "sample-format", "", "how the file is a sample: text or jsonl (default: jsonl for .jsonl/.ndjson, else text)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for each trainer")
	cmd.Flags().StringVar(&artifactsAddr, "artifacts", "", "the artifact store that holds published datasets' leaves (default: --coordinator's address)")
	cmd.Flags().StringVar(&artifactsID, "artifacts-id", "", "the artifact store's key ID, checked in the TLS handshake (default: --coordinator-id)")
	cmd.Flags().StringVar(&format, "format", "table", "output: table or json")
	return cmd
}
