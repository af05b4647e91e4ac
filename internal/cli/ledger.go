package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/ledger/node"
)

func init() { register(newLedgerCmd) }

// defaultLedgerAddr is the gRPC address ledger client commands use when
// --addr is not given (node 1 of configs/ledger).
const defaultLedgerAddr = "127.0.0.1:7101"

// newLedgerCmd is "fedtune ledger": run and inspect ledger nodes.
func newLedgerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Run, inspect and verify permissioned-ledger nodes",
	}
	cmd.AddCommand(newLedgerInitCmd(), newLedgerStartCmd(), newLedgerStatusCmd(), newLedgerBlocksCmd(),
		newLedgerVerifyCmd(), newLedgerJoinCmd(), newLedgerPromoteCmd(), newLedgerRemoveCmd(), newLedgerTxCmd(), newLedgerQueryCmd())
	return cmd
}

// addrFlag adds the --addr and --genesis flags of client commands.
func addrFlag(cmd *cobra.Command, addr, genesisPath *string) {
	cmd.Flags().StringVar(addr, "addr", defaultLedgerAddr, "gRPC address of a ledger node")
	genesisFlag(cmd, genesisPath)
}

// genesisFlag adds --genesis, the file that pins the ledger (withClient).
func genesisFlag(cmd *cobra.Command, genesisPath *string) {
	cmd.Flags().StringVar(genesisPath, "genesis", "", "the chain's genesis file: the ledger node must prove one of its nodes' keys, a commit "+
		"counts only in a block its quorum of nodes cosigned, and --quorum counts only its nodes (without it: a warning, any node key is accepted)")
}

// withClient dials addr over TLS and runs fn with a client, closing it
// after. The TLS identity is a fresh key made for this connection: ledger
// nodes serve the client RPCs to any key (what a tx may do is decided by
// the key that signs it), and the client checks what it reads.
//
// With genesisPath the client is pinned (client.DialPinned): the server must
// prove the key of one of the genesis file's nodes, and SubmitWait counts a
// commit only in a block carrying the genesis quorum of their
// cosignatures. Without it, withClient writes client.UnpinnedWarning to warn
// (nil: no warning) and accepts any server key.
func withClient(ctx context.Context, addr, genesisPath string, warn io.Writer, fn func(*client.Client) error) error {
	var pin *client.Pin
	if genesisPath == "" {
		if warn != nil {
			fmt.Fprintln(warn, "warning: "+client.UnpinnedWarning)
		}
	} else {
		g, err := ledger.LoadGenesis(genesisPath)
		if err != nil {
			return fmt.Errorf("--genesis: %w", err)
		}
		if len(g.Nodes) == 0 {
			// Nothing to pin to; the chain's nodes may still cosign.
			if warn != nil {
				fmt.Fprintf(warn, "warning: --genesis %s lists no nodes, so the ledger node's key cannot be pinned; any TLS key is accepted\n", genesisPath)
			}
		} else if pin, err = client.PinGenesis(g); err != nil {
			return fmt.Errorf("--genesis: %w", err)
		}
	}
	key, err := ledger.GenerateKey()
	if err != nil {
		return err
	}
	c, err := client.DialPinned(ctx, addr, key, pin)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

func newLedgerInitCmd() *cobra.Command {
	var genesis, data, key string
	cmd := &cobra.Command{
		Use:   "init --genesis FILE --data DIR --key FILE",
		Short: "Prepare a node's data directory for a chain",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if genesis == "" || data == "" || key == "" {
				return errors.New("ledger init: --genesis, --data and --key are required")
			}
			id, g, err := node.Init(genesis, data, key)
			if err != nil {
				return fmt.Errorf("ledger init: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialized %s for chain %s as node %s\n", data, g.ChainID, id)
			return nil
		},
	}
	cmd.Flags().StringVar(&genesis, "genesis", "", "genesis YAML file")
	cmd.Flags().StringVar(&data, "data", "", "data directory to prepare")
	cmd.Flags().StringVar(&key, "key", "", "the node's key file")
	return cmd
}

func newLedgerStartCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "start --config FILE",
		Short: "Run a ledger node until interrupted (SIGINT/SIGTERM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config == "" {
				return errors.New("ledger start: --config is required")
			}
			cfg, err := node.LoadConfig(config)
			if err != nil {
				return err
			}
			n, err := node.New(cfg, node.Options{Logger: logger(cmd)})
			if err != nil {
				return fmt.Errorf("ledger start: %w", err)
			}
			return n.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "node config YAML")
	return cmd
}

func newLedgerStatusCmd() *cobra.Command {
	var addr, genesisPath string
	cmd := &cobra.Command{
		Use:   "status [--addr HOST:PORT]",
		Short: "Show a node's raft state, height and peers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd.Context(), addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				st, err := c.Status(cmd.Context())
				if err != nil {
					return fmt.Errorf("ledger status %s: %w", addr, err)
				}
				printStatus(cmd.OutOrStdout(), st)
				return nil
			})
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	return cmd
}

func printStatus(w io.Writer, st *ledgerv1.StatusResponse) {
	fmt.Fprintf(w, "node:    %s\n", st.NodeId)
	fmt.Fprintf(w, "chain:   %s\n", st.ChainId)
	fmt.Fprintf(w, "state:   %s\n", st.State)
	fmt.Fprintf(w, "leader:  %s %s\n", st.LeaderId, st.LeaderGrpcAddress)
	fmt.Fprintf(w, "term:    %d\n", st.Term)
	fmt.Fprintf(w, "height:  %d\n", st.Height)
	fmt.Fprintf(w, "head:    %x\n", st.LastBlockHash)
	fmt.Fprintf(w, "applied: %d (commit %d)\n", st.AppliedIndex, st.CommitIndex)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tSUFFRAGE\tRAFT\tGRPC")
	for _, p := range st.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.NodeId, p.Suffrage, p.RaftAddress, p.GrpcAddress)
	}
	tw.Flush()
}

func newLedgerBlocksCmd() *cobra.Command {
	var addr string
	var from uint64
	var follow bool
	var quorum int
	var genesisPath string
	cmd := &cobra.Command{
		Use:   "blocks [--from H] [--follow] [--quorum N [--genesis FILE]]",
		Short: "Print blocks from a height on; --follow waits for new ones",
		Long: "Print blocks from a height on; --follow waits for new ones.\n" +
			"With --quorum N each block must carry N valid cosignatures from distinct nodes; with --genesis\n" +
			"only the genesis file's nodes count and the chain ID is the file's (without it, any node key counts).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if err := checkQuorumFlags(quorum, genesisPath); err != nil {
				return err
			}
			var pinned map[string]bool // node ID → may cosign (nil: any)
			var chainID string
			if genesisPath != "" {
				var ids []string
				var err error
				if chainID, ids, err = genesisNodes(genesisPath); err != nil {
					return err
				}
				pinned = map[string]bool{}
				for _, id := range ids {
					pinned[id] = true
				}
			}
			return withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				print := func(vb *client.VerifiedBlock) error {
					h := vb.Block.Header
					fmt.Fprintf(out, "%d %x txs=%d time=%s proposer=%.12s cosigs=%d\n", h.Height, vb.Hash,
						len(vb.Block.Txs), time.Unix(0, h.Time).UTC().Format(time.RFC3339Nano), h.Proposer, len(vb.Cosignatures))
					return nil
				}
				if quorum == 0 {
					err := c.Blocks(ctx, from, follow, print)
					if follow && errors.Is(ctx.Err(), context.Canceled) {
						return nil
					}
					return err
				}
				// With a quorum, fetch each block with its gathered cosignatures.
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if chainID == "" {
					chainID = st.ChainId
				}
				for h := from; h <= st.Height; h++ {
					vb, err := c.Block(ctx, h, quorum, chainID)
					if err != nil {
						return err
					}
					if pinned != nil {
						vb.Cosignatures = slices.DeleteFunc(vb.Cosignatures, func(cp client.Checkpoint) bool { return !pinned[cp.NodeID] })
						if len(vb.Cosignatures) < quorum {
							return fmt.Errorf("%w: block %d has %d valid cosignatures from the genesis file's %d nodes, want %d",
								client.ErrQuorum, h, len(vb.Cosignatures), len(pinned), quorum)
						}
					}
					if err := print(vb); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().Uint64Var(&from, "from", 0, "first height")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep printing new blocks until interrupted")
	cmd.Flags().IntVar(&quorum, "quorum", 0, "require this many valid node cosignatures per block (not with --follow)")
	cmd.MarkFlagsMutuallyExclusive("follow", "quorum")
	return cmd
}

func newLedgerVerifyCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "verify --data DIR",
		Short: "Re-derive a stopped node's chain from genesis and check every block",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" {
				return errors.New("ledger verify: --data is required")
			}
			h, err := node.VerifyDataDir(cmd.Context(), data, logger(cmd))
			if err != nil {
				return fmt.Errorf("ledger verify %s: %w", data, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "chain OK: %d blocks after genesis verified\n", h)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the node's data directory (the node must be stopped)")
	return cmd
}

func newLedgerJoinCmd() *cobra.Command {
	var addr, genesisPath, keyFile, pubFile, id, raftAddr, grpcAddr, name string
	var voter bool
	cmd := &cobra.Command{
		Use:   "join --key ADMIN.key --pubkey NODE.pub --raft-addr HOST:PORT --grpc-addr HOST:PORT [--voter]",
		Short: "Add a ledger node (admin-signed NodeAdded: a non-voter; --voter then promotes it once caught up)",
		Long: `Add a ledger node with an admin-signed NodeAdded transaction. Once it commits,
the raft leader adds the node to raft's configuration as a non-voter. With
--voter, join then waits until the node (at --grpc-addr) has caught up with
the chain and submits NodePromoted, after which the leader makes it a voter.
The joining node only starts (config "join: ADDR") and waits to be added.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyFile == "" || pubFile == "" || raftAddr == "" || grpcAddr == "" {
				return errors.New("ledger join: --key, --pubkey, --raft-addr and --grpc-addr are required")
			}
			pub, err := ledger.LoadPublicKey(pubFile)
			if err != nil {
				return fmt.Errorf("ledger join: %w", err)
			}
			nodeID := ledger.KeyID(pub)
			if id != "" && id != nodeID {
				return fmt.Errorf("ledger join: --node-id %s is not the ID of %s (%s)", id, pubFile, nodeID)
			}
			body := ledger.NodeAdded{PublicKey: hex.EncodeToString(pub), RaftAddress: raftAddr, GRPCAddress: grpcAddr, Name: name}
			if err := submitSigned(cmd, addr, genesisPath, keyFile, body); err != nil {
				return fmt.Errorf("ledger join: %w", err)
			}
			if !voter {
				fmt.Fprintf(cmd.OutOrStdout(), "added %s as a non-voter\n", nodeID)
				return nil
			}
			if err := waitCaughtUp(cmd.Context(), addr, grpcAddr, genesisPath, 2*time.Minute); err != nil {
				return fmt.Errorf("ledger join: %s was added as a non-voter but %w; promote it later with \"fedtune ledger promote\"", nodeID, err)
			}
			if err := submitSigned(cmd, addr, genesisPath, keyFile, ledger.NodePromoted{ID: nodeID}); err != nil {
				return fmt.Errorf("ledger join: promote: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s as a voter\n", nodeID)
			return nil
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&keyFile, "key", "", "the admin key that signs the transaction")
	cmd.Flags().StringVar(&pubFile, "pubkey", "", "the joining node's public key (NAME.pub, or its key file)")
	cmd.Flags().StringVar(&id, "node-id", "", "the joining node's ID (optional check against --pubkey)")
	cmd.Flags().StringVar(&raftAddr, "raft-addr", "", "the joining node's raft address")
	cmd.Flags().StringVar(&grpcAddr, "grpc-addr", "", "the joining node's gRPC address")
	cmd.Flags().StringVar(&name, "name", "", "a name for the node (logs)")
	cmd.Flags().BoolVar(&voter, "voter", false, "promote to voter once caught up (NodePromoted)")
	return cmd
}

// waitCaughtUp polls the node at grpcAddr until its height reaches the
// height the node at addr has now.
func waitCaughtUp(ctx context.Context, addr, grpcAddr, genesisPath string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var target uint64
	if err := withClient(ctx, addr, genesisPath, nil, func(c *client.Client) error {
		st, err := c.Status(ctx)
		if err == nil {
			target = st.Height
		}
		return err
	}); err != nil {
		return err
	}
	var last error
	for {
		last = withClient(ctx, grpcAddr, genesisPath, nil, func(c *client.Client) error {
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if st.Height < target {
				return fmt.Errorf("it is at height %d of %d", st.Height, target)
			}
			return nil
		})
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("it did not catch up in %v: %v", limit, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newLedgerPromoteCmd() *cobra.Command {
	var addr, genesisPath, keyFile, id string
	cmd := &cobra.Command{
		Use:   "promote --key ADMIN.key --node-id ID",
		Short: "Make an added ledger node a voter (admin-signed NodePromoted)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyFile == "" || id == "" {
				return errors.New("ledger promote: --key and --node-id are required")
			}
			if err := submitSigned(cmd, addr, genesisPath, keyFile, ledger.NodePromoted{ID: id}); err != nil {
				return fmt.Errorf("ledger promote: %w", err)
			}
			return nil
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&keyFile, "key", "", "the admin key that signs the transaction")
	cmd.Flags().StringVar(&id, "node-id", "", "the node's ID")
	return cmd
}

func newLedgerRemoveCmd() *cobra.Command {
	var addr, genesisPath, keyFile, id, reason string
	cmd := &cobra.Command{
		Use:   "remove --key ADMIN.key --node-id ID [--reason TEXT]",
		Short: "Remove a ledger node (admin-signed NodeRemoved; the leader then takes it out of raft)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyFile == "" || id == "" {
				return errors.New("ledger remove: --key and --node-id are required")
			}
			if err := submitSigned(cmd, addr, genesisPath, keyFile, ledger.NodeRemoved{ID: id, Reason: reason}); err != nil {
				return fmt.Errorf("ledger remove: %w", err)
			}
			return nil
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&keyFile, "key", "", "the admin key that signs the transaction")
	cmd.Flags().StringVar(&id, "node-id", "", "the node's ID")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded on the chain)")
	return cmd
}

func newLedgerTxCmd() *cobra.Command {
	var addr, genesisPath string
	cmd := &cobra.Command{
		Use:   "tx HASH",
		Short: "Show a committed transaction and check its Merkle inclusion proof",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := hex.DecodeString(args[0])
			if err != nil || len(b) != 32 {
				return fmt.Errorf("ledger tx: %q is not a 64-hex-character tx hash", args[0])
			}
			var h [32]byte
			copy(h[:], b)
			return withClient(cmd.Context(), addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				r, err := c.Tx(cmd.Context(), h)
				if err != nil {
					return fmt.Errorf("ledger tx: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "height %d index %d of %d (inclusion proof verified against tx root %x)\n%s\n",
					r.Height, r.Index, r.TreeSize, r.TxRoot, r.Envelope)
				return nil
			})
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	return cmd
}

func newLedgerQueryCmd() *cobra.Command {
	var addr, genesisPath string
	var round uint64
	kinds := map[string]ledgerv1.QueryKind{
		"member":      ledgerv1.QueryKind_QUERY_KIND_MEMBER,
		"model":       ledgerv1.QueryKind_QUERY_KIND_MODEL,
		"dataset":     ledgerv1.QueryKind_QUERY_KIND_DATASET,
		"round":       ledgerv1.QueryKind_QUERY_KIND_ROUND,
		"lineage":     ledgerv1.QueryKind_QUERY_KIND_LINEAGE,
		"nonce":       ledgerv1.QueryKind_QUERY_KIND_NONCE,
		"update":      ledgerv1.QueryKind_QUERY_KIND_UPDATES_BY_DIGEST,
		"suspensions": ledgerv1.QueryKind_QUERY_KIND_SUSPENSIONS,
	}
	cmd := &cobra.Command{
		Use:   "query member|model|dataset|round|lineage|nonce|update|suspensions KEY [--round N]",
		Short: "Print a ledger record as JSON (round, suspensions: KEY is the job ID; update: KEY is an update digest, its submissions listed author first)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, ok := kinds[args[0]]
			if !ok {
				return fmt.Errorf("ledger query: unknown kind %q (want member, model, dataset, round, lineage, nonce, update or suspensions)", args[0])
			}
			if args[0] == "round" && round == 0 {
				return fmt.Errorf("ledger query round %s: --round N is required (rounds count from 1; fedtune round status %s lists the job's rounds)", args[1], args[1])
			}
			return withClient(cmd.Context(), addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				js, err := c.Query(cmd.Context(), k, args[1], round)
				if err != nil {
					return fmt.Errorf("ledger query: %w", err)
				}
				fmt.Fprintln(cmd.OutOrStdout(), strings.TrimSpace(string(js)))
				return nil
			})
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().Uint64Var(&round, "round", 0, "round number, from 1 (query round; required there)")
	return cmd
}
