package cli

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

func init() { register(newAuditCmd) }

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Model lineage, dataset proof checks, chain export and offline re-verification",
	}
	cmd.AddCommand(newAuditLineageCmd(), newAuditCheckProofCmd(), newAuditContainsCmd(), newAuditExportCmd(), newAuditVerifyCmd(), newAuditReceiptCmd(), newAuditProvenanceCmd(), newAuditContributionsCmd(), newAuditReplayCmd())
	cmd.AddCommand(newAuditLicensesCmd())
	return cmd
}

// manifestRoots reads every manifest file in dir (any name) and maps its
// digest to its root. An unreadable or non-manifest file is skipped.
func manifestRoots(dir string) (map[string]string, error) {
	roots := map[string]string{}
	if dir == "" {
		return roots, nil
	}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if info, err := d.Info(); err != nil || info.Size() > datasets.MaxManifestBytes {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if sm, err := datasets.DecodeManifest(data, nil); err == nil {
			roots[sm.Digest] = sm.Root
		}
		return nil
	})
	return roots, err
}

func readExportFile(path string) (*audit.Export, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	e, err := audit.ReadExport(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// anchorLineage checks every fact of l against blocks that carry quorum
// node cosignatures (audit.Anchor). The chain ID and the nodes whose
// cosignatures count come from the genesis file when one is given; without
// it the chain ID is the node's own and any node's valid cosignature counts,
// which guards against a stale or broken node but not a lying one (it can
// make up node keys): warn says so.
func anchorLineage(ctx context.Context, c *client.Client, l *ledger.Lineage, model string, quorum int, genesisPath string, warn io.Writer) (*audit.AnchorReport, error) {
	opts := audit.AnchorOptions{Quorum: quorum, Model: model}
	if genesisPath != "" {
		var err error
		if opts.ChainID, opts.Nodes, err = genesisNodes(genesisPath); err != nil {
			return nil, err
		}
	} else {
		fmt.Fprintln(warn, "warning: --quorum without --genesis counts any node key's cosignature; a lying node can make up keys. Pass the chain's genesis file to pin them.")
		st, err := c.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		opts.ChainID = st.ChainId
	}
	return audit.Anchor(ctx, c, l, opts)
}

// genesisNodes reads the chain ID and the IDs of the nodes a genesis file
// lists: the only keys whose checkpoint cosignatures count toward a quorum.
// A genesis without nodes pins nothing and is an error.
func genesisNodes(path string) (chainID string, ids []string, err error) {
	g, err := ledger.LoadGenesis(path)
	if err != nil {
		return "", nil, err
	}
	if len(g.Nodes) == 0 {
		return "", nil, fmt.Errorf("--genesis %s lists no nodes, so cosignatures cannot be pinned to the chain's nodes", path)
	}
	for _, n := range g.Nodes {
		ids = append(ids, ledger.KeyID(n.Key))
	}
	return g.ChainID, ids, nil
}

// quorumFlags adds --quorum and --genesis to an audit command that reads a
// lineage from a ledger node.
func quorumFlags(cmd *cobra.Command, quorum *int, genesisPath *string) {
	cmd.Flags().IntVar(quorum, "quorum", 0, "check every fact of the lineage against its tx in a block with at least N valid node cosignatures (0: trust the node)")
	genesisFlag(cmd, genesisPath)
}

func checkQuorumFlags(quorum int, genesisPath string) error {
	if quorum < 0 {
		return fmt.Errorf("--quorum %d is negative", quorum)
	}
	return nil
}

func newAuditLineageCmd() *cobra.Command {
	var addr, format, exportPath, manifests, genesisPath string
	var quorum int
	cmd := &cobra.Command{
		Use:   "lineage MODEL-DIGEST [--addr ADDR [--quorum N [--genesis FILE]] | --export FILE] [--format table|json|dot|html]",
		Short: "Show the DAG from a model back to its base model: rounds, contributors, weights, datasets, rejections",
		Long: "Show the DAG from a model back to its base model: every round with its strategy and parameters, each\n" +
			"contributor with its weight, update digest and dataset (licence, sample count and the Merkle root the\n" +
			"ledger recorded), and the rejected updates with their reasons; each dataset's attestations (DatasetAttested),\n" +
			"and a MISSING line for each attestation a round's job requires that a dataset behind it lacks.\n" +
			"--format dot is Graphviz input; --format html is one self-contained page (click a node for its details).\n" +
			"The node named by --addr is trusted unless --quorum N is given: then every fact shown is checked against the\n" +
			"signed tx that recorded it, in a block carrying at least N valid node cosignatures (only the nodes of the\n" +
			"--genesis file count; without it any node key counts, which a lying node can mint), and nothing is printed\n" +
			"when any fact does not match. Pick N above half of (nodes + faulty nodes tolerated).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkQuorumFlags(quorum, genesisPath); err != nil {
				return fmt.Errorf("audit lineage: %w", err)
			}
			if quorum > 0 && exportPath != "" {
				return errors.New("audit lineage: --quorum reads from a node; an --export file is verified in full instead")
			}
			ctx := cmd.Context()
			var l *ledger.Lineage
			var anchored *audit.AnchorReport
			if exportPath != "" {
				e, err := readExportFile(exportPath)
				if err != nil {
					return fmt.Errorf("audit lineage: %w", err)
				}
				if l, err = audit.Lineage(ctx, e, args[0]); err != nil {
					return fmt.Errorf("audit lineage: %w", err)
				}
			} else {
				err := withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
					var err error
					if l, err = c.Lineage(ctx, args[0]); err != nil || quorum == 0 {
						return err
					}
					if anchored, err = anchorLineage(ctx, c, l, args[0], quorum, genesisPath, cmd.ErrOrStderr()); err != nil {
						return err
					}
					l = anchored.Lineage
					return nil
				})
				if err != nil {
					return fmt.Errorf("audit lineage %s: %w", args[0], err)
				}
			}
			roots, err := manifestRoots(manifests)
			if err != nil {
				return fmt.Errorf("audit lineage: %w", err)
			}
			g := audit.NewGraph(l, roots)
			g.Anchored = anchored
			return audit.Render(cmd.OutOrStdout(), g, format)
		},
	}
	quorumFlags(cmd, &quorum, &genesisPath)
	cmd.Flags().StringVar(&addr, "addr", defaultLedgerAddr, "gRPC address of a ledger node")
	cmd.Flags().StringVar(&format, "format", "table", "output: "+strings.Join(audit.Formats, ", "))
	cmd.Flags().StringVar(&exportPath, "export", "", "read the chain from an export file (verified first) instead of a node")
	cmd.Flags().StringVar(&manifests, "manifests", "", "folder of dataset manifest files, for the Merkle roots of records that carry none")
	return cmd
}

func newAuditCheckProofCmd() *cobra.Command {
	var rootHex, dataset, addr, genesisPath, ledgerAddr, manifestPath string
	var size int64
	cmd := &cobra.Command{
		Use:   "check-proof PROOF (--root HEX [--size N] | [--dataset DIGEST] [--ledger ADDR] [--manifest M])",
		Short: "Verify a dataset inclusion or exclusion proof against a trusted root or a dataset registered on the ledger",
		Long: "Verify a proof from `fedtune dataset prove`.\n" +
			"--root: against this Merkle root (and --size samples; default the proof's tree_size).\n" +
			"Otherwise against the dataset the ledger registered under --dataset DIGEST (default: the digest of the\n" +
			"manifest the proof embeds): against the Merkle root and sample count the ledger recorded; a manifest\n" +
			"(embedded in the proof or given with --manifest) must also hash to DIGEST, be signed by the registering\n" +
			"trainer and agree with the ledger.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rootHex != "" && dataset != "" {
				return errors.New("audit check-proof: give at most one of --root or --dataset")
			}
			if cmd.Flags().Changed("ledger") {
				addr = ledgerAddr
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("audit check-proof: %w", err)
			}
			p, err := datasets.DecodeProof(data)
			if err != nil {
				return fmt.Errorf("audit check-proof %s: %w", args[0], err)
			}
			var manifest []byte
			if manifestPath != "" {
				if manifest, err = os.ReadFile(manifestPath); err != nil {
					return fmt.Errorf("audit check-proof: %w", err)
				}
			}
			if rootHex == "" && dataset == "" {
				m := manifest
				if m == nil {
					m = []byte(p.Manifest)
				}
				if len(m) == 0 {
					return errors.New("audit check-proof: give --root, or --dataset DIGEST (the proof embeds no manifest to name its dataset)")
				}
				dataset = digest.Bytes(m)
			}
			what := ""
			if rootHex != "" {
				b, err := hex.DecodeString(rootHex)
				if err != nil || len(b) != 32 {
					return fmt.Errorf("audit check-proof: --root %q is not 64 hex characters", rootHex)
				}
				var root [32]byte
				copy(root[:], b)
				n := p.TreeSize
				if cmd.Flags().Changed("size") {
					if size < 0 {
						return fmt.Errorf("audit check-proof: --size %d is negative", size)
					}
					n = uint64(size)
				}
				if err := p.Verify(root, n); err != nil {
					return fmt.Errorf("audit check-proof %s: %w", args[0], err)
				}
				what = "root " + rootHex
			} else {
				ctx := cmd.Context()
				err := withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
					ds, err := c.Dataset(ctx, dataset)
					if err != nil {
						return err
					}
					owner, err := c.Member(ctx, ds.Owner)
					if err != nil {
						return err
					}
					sm, err := audit.CheckProofAgainstLedger(p, ds, owner, manifest)
					if err != nil {
						return err
					}
					root, how := ds.Root, "the ledger's root"
					if sm != nil {
						root, how = sm.Root, "the signed manifest's root"
					}
					what = fmt.Sprintf("dataset %s (%s, %s, %d samples, root %s, registered at height %d by %s; checked against %s)", ds.Digest, ds.Name, ds.Licence, ds.Samples, root, ds.Height, ds.Owner, how)
					return nil
				})
				if err != nil {
					return fmt.Errorf("audit check-proof %s: %w", args[0], err)
				}
			}
			verdict := "IS in"
			if !p.Included() {
				verdict = "is NOT in"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK: %s proof verifies: sample %s %s %s\n", p.Kind, p.Sample, verdict, what)
			return nil
		},
	}
	cmd.Flags().StringVar(&rootHex, "root", "", "trusted Merkle root (hex)")
	cmd.Flags().Int64Var(&size, "size", 0, "trusted sample count (with --root)")
	cmd.Flags().StringVar(&dataset, "dataset", "", "digest of a dataset registered on the ledger (default: the embedded manifest's)")
	cmd.Flags().StringVar(&manifestPath, "manifest", "", "the dataset's manifest file (optional: the ledger records the root)")
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&ledgerAddr, "ledger", defaultLedgerAddr, "gRPC address of a ledger node (the same as --addr)")
	return cmd
}

// streamExport fetches genesis (from a file) and every block from a node
// into an Export, printing a progress line to w.
func streamExport(ctx context.Context, addr, genesisPath string, w io.Writer, write func(*ledger.Block) error) (*audit.Export, error) {
	genesis, err := os.ReadFile(genesisPath)
	if err != nil {
		return nil, err
	}
	var e *audit.Export
	err = withClient(ctx, addr, genesisPath, w, func(c *client.Client) error {
		var err error
		e, err = streamChain(ctx, c, genesis, addr, w, write)
		return err
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// streamChain reads every block of c's chain up to the head its status
// gives into an Export with genesis (or hands each to write), printing a
// progress line to w.
func streamChain(ctx context.Context, c *client.Client, genesis []byte, addr string, w io.Writer, write func(*ledger.Block) error) (*audit.Export, error) {
	e := &audit.Export{Genesis: genesis}
	st, err := c.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", addr, err)
	}
	head := st.Height
	p := newProgress(w, "blocks", int(head)+1)
	defer p.Finish()
	err = c.Blocks(ctx, 0, false, func(vb *client.VerifiedBlock) error {
		if vb.Block.Header.Height > head {
			return errStopStream
		}
		if write != nil {
			if err := write(vb.Block); err != nil {
				return err
			}
		} else {
			e.Blocks = append(e.Blocks, ledger.EncodeBlock(vb.Block))
		}
		e.HeadHash = vb.Hash
		p.Set(int(vb.Block.Header.Height)+1, "")
		if vb.Block.Header.Height == head {
			return errStopStream
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopStream) {
		return nil, err
	}
	return e, nil
}

var errStopStream = errors.New("stop stream")

func newAuditExportCmd() *cobra.Command {
	var addr, out, genesisPath string
	cmd := &cobra.Command{
		Use:   "export -o chain.fedtune --genesis GENESIS.yaml [--addr ADDR]",
		Short: "Write the genesis file and every block of a node's chain into one export file",
		Long: "Write the genesis file and every block of a node's chain into one framed, versioned export file\n" +
			"(see package internal/audit), for `fedtune audit verify --export`. The node serves blocks but not the\n" +
			"genesis file, so pass the one the chain was started from; verify checks that it gives block 0.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" || genesisPath == "" {
				return errors.New("audit export: -o and --genesis are required")
			}
			genesis, err := os.ReadFile(genesisPath)
			if err != nil {
				return fmt.Errorf("audit export: %w", err)
			}
			var n uint64
			err = audit.WriteFileAtomic(out, 0o644, func(w io.Writer) error {
				bw := bufio.NewWriter(w)
				ew, err := audit.NewExportWriter(bw, genesis)
				if err != nil {
					return err
				}
				if _, err := streamExport(cmd.Context(), addr, genesisPath, cmd.ErrOrStderr(), ew.WriteBlock); err != nil {
					return err
				}
				if err := ew.Close(); err != nil {
					return err
				}
				n = ew.Blocks()
				return bw.Flush()
			})
			if err != nil {
				return fmt.Errorf("audit export: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %d blocks (heights 0-%d) to %s\n", n, n-1, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", defaultLedgerAddr, "gRPC address of a ledger node")
	cmd.Flags().StringVarP(&out, "output", "o", "", "export file to write")
	cmd.Flags().StringVar(&genesisPath, "genesis", "", "the chain's genesis file (it also pins the ledger node: it must prove one of the genesis nodes' keys)")
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var ledgerAddr, exportPath, artifacts, genesisPath string
	var jobs []string
	var strictRejections bool
	cmd := &cobra.Command{
		Use:   "verify (--ledger ADDR --genesis GENESIS.yaml | --export FILE) [--artifacts DIR [--job JOB.yaml] [--strict-rejections]]",
		Short: "Re-derive a whole chain from genesis, and with --artifacts re-run every aggregation; name the first mismatch",
		Long: "Re-derive a whole chain from genesis on a fresh in-memory ledger: every block hash, tx root, signature,\n" +
			"nonce and state hash. With --artifacts (blobs named by digest, flat or in <ab>/<digest> folders) also\n" +
			"check that every model and update exists and hashes right, check dataset manifests found there, and\n" +
			"re-run each committed round from its job's recipe on the chain (JobRegistered: strategy, parameters,\n" +
			"privacy, a LoRA job's initial adapter) over every submitted, unrejected update, comparing the digest\n" +
			"and shares with the ledger's. A round with DP noise is compared with its clipped, un-noised re-run:\n" +
			"the difference must have the size the noise multiplier gives (see README, \"DP rounds\"). Every round\n" +
			"must start from its job's last committed model (round 1: the recipe's base). Every UpdateRejected must\n" +
			"be signed by a designated aggregator, and its update must fail one of the aggregator's input checks\n" +
			"(malformed, layout unlike the round's reference, a non-finite value, a norm above max_norm); a\n" +
			"rejected update not in --artifacts is printed as a WARNING line (unverifiable), a failure with\n" +
			"--strict-rejections. No job file is needed. Exits non-zero naming the first height, tx and field that\n" +
			"do not match. With --ledger the head block the node served must also carry the genesis quorum of node\n" +
			"cosignatures (a genesis without nodes: a warning), so the node cannot serve a chain of its own making.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (ledgerAddr == "") == (exportPath == "") {
				return errors.New("audit verify: give exactly one of --ledger ADDR or --export FILE")
			}
			ctx := cmd.Context()
			var e *audit.Export
			var err error
			if exportPath != "" {
				e, err = readExportFile(exportPath)
			} else {
				if genesisPath == "" {
					return errors.New("audit verify: --ledger needs --genesis (the node does not serve its genesis file)")
				}
				e, err = streamExport(ctx, ledgerAddr, genesisPath, cmd.ErrOrStderr(), nil)
			}
			if err != nil {
				return fmt.Errorf("audit verify: %w", err)
			}
			start := time.Now()
			rep, err := audit.Verify(ctx, e, audit.VerifyOptions{Artifacts: artifacts, Jobs: jobs, StrictRejections: strictRejections, Logger: logger(cmd)})
			if err != nil {
				return err
			}
			// From a node: the head it served must be the one the genesis
			// nodes cosigned, or the node could have served a chain of its
			// own making (every signature good, some txs left out).
			var head *audit.HeadAnchor
			if ledgerAddr != "" {
				if _, _, gerr := genesisNodes(genesisPath); gerr != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: the head block is not checked against node cosignatures: --genesis: %v\n", gerr)
				} else if err := withClient(ctx, ledgerAddr, genesisPath, nil, func(c *client.Client) error {
					head, err = anchorHead(ctx, c, genesisPath, 0, rep)
					return err
				}); err != nil {
					return fmt.Errorf("audit verify: %w", err)
				}
			}
			for _, w := range rep.Unverifiable {
				fmt.Fprintf(cmd.OutOrStdout(), "WARNING: unverifiable rejection: %s\n", w)
			}
			if rep.InitModels > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "pretrain: %d initial models recomputed from the init config and seed their recipes record\n", rep.InitModels)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK: chain verified to height %d (head %x): %d txs, %d committed rounds, %d re-aggregated, %d evaluated (RoundEvaluated; losses not re-computed), %d artifacts and %d manifests checked, %d attestation statements and %d published manifests (%d with their leaves and shards) re-checked in %s\n",
				rep.Height, rep.HeadHash[:8], rep.Txs, rep.Rounds, rep.Reaggregated, rep.Evaluated, rep.Artifacts, rep.Manifests, rep.Attestations, rep.Published, rep.PublishedRoots,
				time.Since(start).Round(time.Millisecond))
			if head != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "head block %d is cosigned by %d of the %d genesis nodes (quorum %d)\n", head.Height, len(head.Cosigners), head.Nodes, head.Quorum)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ledgerAddr, "ledger", "", "gRPC address of a ledger node to read the chain from")
	cmd.Flags().StringVar(&genesisPath, "genesis", "", "the chain's genesis file (with --ledger; it also pins the ledger node)")
	cmd.Flags().StringVar(&exportPath, "export", "", "an export file from `fedtune audit export`")
	cmd.Flags().StringVar(&artifacts, "artifacts", "", "directory of artifacts named by digest")
	cmd.Flags().BoolVar(&strictRejections, "strict-rejections", false, "fail on a rejected update that is not in --artifacts (whose rejection cannot be checked) instead of warning")
	cmd.Flags().StringSliceVar(&jobs, "job", nil, "job YAML files (repeatable; only for chains whose recipe records no initial adapter): a LoRA job's round 1 is re-run from the initial adapter the job derives")
	return cmd
}
