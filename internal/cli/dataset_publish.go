package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/spdx"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

// publishedCmds are the dataset subcommands about published data; the
// dataset command adds them.
func publishedCmds() []*cobra.Command {
	return []*cobra.Command{newDatasetPublishCmd(), newDatasetFetchCmd(), newDatasetLsCmd(), newDatasetShowCmd()}
}

// artifactsFlags name the artifact store (the coordinator's artifact
// service) published data goes to and comes from.
type artifactsFlags struct {
	addr, serverID string
	insecure       bool
}

func (a *artifactsFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.addr, "artifacts", "", "gRPC address of the artifact store (the coordinator's)")
	f.StringVar(&a.serverID, "artifacts-id", "", "the artifact server's key ID, checked in the TLS handshake (the coordinator's member ID)")
	f.BoolVar(&a.insecure, "insecure", false, "talk to the artifact store in plain text, without TLS")
}

// dial connects to the artifact store as key.
func (a *artifactsFlags) dial(key ed25519.PrivateKey) (*artifact.Client, error) {
	if a.addr == "" {
		return nil, errors.New("--artifacts ADDR is required (the artifact store's gRPC address)")
	}
	if a.insecure {
		return artifact.Dial(a.addr, tlsid.InsecureDialOption())
	}
	if !digest.Valid(a.serverID) {
		return nil, fmt.Errorf("--artifacts-id %q is not a key ID (64 lowercase hex characters); or pass --insecure for plain text", a.serverID)
	}
	opt, err := tlsid.DialOption(key, tlsid.ExpectID(a.serverID))
	if err != nil {
		return nil, err
	}
	return artifact.Dial(a.addr, opt)
}

func newDatasetPublishCmd() *cobra.Command {
	var (
		name, licence, cardPath, format, keyPath, addr, genesisPath string
		shardSamples                                                int
		af                                                          artifactsFlags
	)
	cmd := &cobra.Command{
		Use:   "publish PATH --name NAME --license SPDX-ID [--card README.md] --key KEY --artifacts ADDR",
		Short: "Cut a dataset into content-addressed shards, upload them and record a signed manifest (DatasetPublished)",
		Long: "Publish a dataset for every member to read. The samples (lines of a text file, JSONL records' text, or\n" +
			"instruction records) are ordered by their SHA-256 leaf hash and cut into shards of --shard-samples; the shards,\n" +
			"the leaves file and the card go to the artifact store, and a manifest signed by --key (the Merkle root over the\n" +
			"leaves, each shard's digest and sample range, counts, licence, the card's digest) is recorded by a DatasetPublished tx.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if name == "" || licence == "" || keyPath == "" {
				return errors.New("dataset publish: --name, --license and --key are required")
			}
			if err := spdx.Validate(licence); err != nil {
				return fmt.Errorf("dataset publish: --license: %w", err)
			}
			key, err := ledger.LoadKey(keyPath)
			if err != nil {
				return fmt.Errorf("dataset publish: %w", err)
			}
			d, pf, err := loadPublishable(args[0], format)
			if err != nil {
				return fmt.Errorf("dataset publish: %w", err)
			}
			var card []byte
			if cardPath != "" {
				if card, err = os.ReadFile(cardPath); err != nil {
					return fmt.Errorf("dataset publish: --card: %w", err)
				}
			}
			ac, err := af.dial(key)
			if err != nil {
				return fmt.Errorf("dataset publish: %w", err)
			}
			defer ac.Close()
			p := newProgress(cmd.ErrOrStderr(), "uploads", publishBlobs(len(d.Samples), shardSamples, card != nil))
			sm, err := trainer.PublishDataset(ctx, &countingSink{BlobSink: ac, p: p}, key, d, card, datasets.PublishOptions{Name: name, Format: pf, Licence: licence, ShardSamples: shardSamples})
			p.Finish()
			if err != nil {
				return fmt.Errorf("dataset publish %s: %w", args[0], err)
			}
			if err := submitSigned(cmd, addr, genesisPath, keyPath, ledger.DatasetPublished{Manifest: string(sm.Envelope)}); err != nil {
				return fmt.Errorf("dataset publish: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s as %s: %d samples in %d shards, %d bytes, root %s, licence %s\n",
				name, sm.Digest, sm.Samples, len(sm.Shards), sm.Bytes, sm.Root, sm.Licence)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "the dataset's name on the ledger (letters, digits, '.', '_', '-'; unique)")
	f.StringVar(&licence, "license", "", "SPDX licence expression (e.g. CC-BY-4.0, Apache-2.0 OR MIT)")
	f.StringVar(&cardPath, "card", "", "the dataset card (a README), stored and named by digest in the manifest")
	f.StringVar(&format, "format", "", "loader layout: text, jsonl or instruct (default: instruct if the file is instruction data, else by extension)")
	f.IntVar(&shardSamples, "shard-samples", datasets.DefaultShardSamples, "samples per shard")
	f.StringVar(&keyPath, "key", "", "the publisher's (a trainer member's) private key")
	addrFlag(cmd, &addr, &genesisPath)
	af.add(cmd)
	return cmd
}

// loadPublishable reads the data at path and says which published format
// its samples are in: instruct for instruction data, text otherwise.
func loadPublishable(path, format string) (*datasets.Dataset, string, error) {
	switch format {
	case "instruct":
		d, ok := trainer.ReadInstruct(path)
		if !ok {
			return nil, "", fmt.Errorf("%s is not instruction data (datasets/instruct formats)", path)
		}
		return d, dspub.FormatInstruct, nil
	case "", datasets.FormatJSONL:
		if d, ok := trainer.ReadInstruct(path); ok && format == "" {
			return d, dspub.FormatInstruct, nil
		}
	case datasets.FormatText, datasets.FormatDir:
	default:
		return nil, "", fmt.Errorf("--format %q: want text, dir, jsonl or instruct", format)
	}
	d, err := datasets.Load(path, datasets.Options{Format: format})
	return d, dspub.FormatText, err
}

// publishedRecord reads dataset ref (a digest, or a published name) from
// the ledger and its signed manifest, checked with the owner's key.
func publishedRecord(ctx context.Context, c *client.Client, ref string) (*ledger.Dataset, *dspub.Signed, error) {
	var rec *ledger.Dataset
	if digest.Valid(ref) {
		r, err := c.Dataset(ctx, ref)
		if err != nil {
			return nil, nil, err
		}
		rec = r
	} else {
		all, err := c.PublishedDatasets(ctx)
		if err != nil {
			return nil, nil, err
		}
		for i := range all {
			if all[i].Name == ref {
				rec = &all[i].Dataset
			}
		}
		if rec == nil {
			return nil, nil, fmt.Errorf("no dataset named %q is published (`fedtune dataset ls` lists them)", ref)
		}
		if err := checkListed(ctx, c, rec); err != nil {
			return nil, nil, fmt.Errorf("published dataset %q (%s): %w", rec.Name, rec.Digest, err)
		}
	}
	if !rec.Published {
		return rec, nil, nil
	}
	m, err := c.Member(ctx, rec.Owner)
	if err != nil {
		return nil, nil, fmt.Errorf("owner %s of dataset %s: %w", rec.Owner, rec.Digest, err)
	}
	pub, err := ledger.ParsePublicKey(m.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("owner %s: %w", rec.Owner, err)
	}
	sm, err := trainer.PublishedManifest(rec, pub)
	if err != nil {
		return nil, nil, err
	}
	return rec, sm, nil
}

// listPublished returns the record of every published dataset, in the
// order they were published, from the ledger's index of published
// datasets (a paged query, not a scan of the blocks). Each record is
// checked against the chain: its DatasetPublished tx (fetched by the
// record's tx hash) carries the record's manifest and is proved committed
// at the record's height (client.VerifyCommitted: the block's tx root,
// and a pinned client's cosignatures).
func listPublished(ctx context.Context, c *client.Client) ([]ledger.Dataset, error) {
	ls, err := c.PublishedDatasets(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ledger.Dataset, 0, len(ls))
	for _, l := range ls {
		if err := checkListed(ctx, c, &l.Dataset); err != nil {
			return nil, fmt.Errorf("published dataset %q (%s): %w", l.Name, l.Digest, err)
		}
		out = append(out, l.Dataset)
	}
	return out, nil
}

// checkListed checks a listed published dataset against its tx on the
// chain.
func checkListed(ctx context.Context, c *client.Client, d *ledger.Dataset) error {
	if !d.Published {
		return errors.New("the ledger lists it as published, but its record is not")
	}
	if got := digest.Bytes([]byte(d.Manifest)); got != d.Digest {
		return fmt.Errorf("its manifest hashes to %s, not its digest", got)
	}
	h, err := hex.DecodeString(d.TxHash)
	if err != nil || len(h) != 32 {
		return fmt.Errorf("tx hash %q is not 32 bytes of hex", d.TxHash)
	}
	rec, err := c.Tx(ctx, [32]byte(h))
	if err != nil {
		return fmt.Errorf("its tx %s: %w", d.TxHash, err)
	}
	tx, err := ledger.DecodeTx(rec.Envelope)
	if err != nil || tx.Hash != [32]byte(h) {
		return fmt.Errorf("the node's tx %s does not decode to that tx", d.TxHash)
	}
	body, ok := tx.Body.(ledger.DatasetPublished)
	if !ok || body.Manifest != d.Manifest {
		return fmt.Errorf("tx %s is not the DatasetPublished of this manifest", d.TxHash)
	}
	return c.VerifyCommitted(ctx, rec.Envelope, d.Height)
}

func newDatasetFetchCmd() *cobra.Command {
	var (
		out, keyPath, addr, genesisPath string
		af                              artifactsFlags
	)
	cmd := &cobra.Command{
		Use:   "fetch DIGEST|NAME -o DIR --key KEY --artifacts ADDR",
		Short: "Download a published dataset, checking every shard and the Merkle root; write DIR/data.jsonl",
		Long: "Download a published dataset: the manifest from the ledger (its owner's signature checked), the leaves\n" +
			"(checked against the manifest's Merkle root), then every shard (each sample against its leaf, then the shard's\n" +
			"digest). A mismatch names the shard and the sample; nothing is written unless all of it checks. DIR then holds\n" +
			"manifest.json, data.jsonl (the samples, which `dataset verify`-style tools and training read) and README.md (the card).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if out == "" || keyPath == "" {
				return errors.New("dataset fetch: -o DIR and --key are required")
			}
			key, err := ledger.LoadKey(keyPath)
			if err != nil {
				return fmt.Errorf("dataset fetch: %w", err)
			}
			return withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				rec, sm, err := publishedRecord(ctx, c, args[0])
				if err != nil {
					return fmt.Errorf("dataset fetch %s: %w", args[0], err)
				}
				if sm == nil {
					return fmt.Errorf("dataset fetch %s: dataset %q is registered private data of %s, not published", args[0], rec.Name, rec.Owner)
				}
				ac, err := af.dial(key)
				if err != nil {
					return fmt.Errorf("dataset fetch: %w", err)
				}
				defer ac.Close()
				blobs := len(sm.Shards) + 1 // and the leaves
				if sm.Card != "" {
					blobs++
				}
				p := newProgress(cmd.ErrOrStderr(), "downloads", blobs)
				err = trainer.FetchPublished(ctx, &countingSource{BlobSource: ac, p: p}, sm, out)
				p.Finish()
				if err != nil {
					return fmt.Errorf("dataset fetch %s: %w", args[0], err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "fetched %s (%s): %d samples in %d shards checked against root %s; written to %s\n",
					sm.Name, sm.Digest, sm.Samples, len(sm.Shards), sm.Root, out)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "folder to write the dataset into")
	cmd.Flags().StringVar(&keyPath, "key", "", "a member's private key (the artifact store serves members)")
	addrFlag(cmd, &addr, &genesisPath)
	af.add(cmd)
	return cmd
}

func newDatasetLsCmd() *cobra.Command {
	var addr, genesisPath, exportPath string
	var asJSON, fromChain bool
	var quorum int
	cmd := &cobra.Command{
		Use:   "ls [--addr ADDR [--genesis FILE] [--from-chain [--quorum N]] | --export FILE] [--json]",
		Short: "List the published datasets recorded on the ledger",
		Long: `List the published datasets recorded on the ledger, in the order they were published.

What each mode trusts:

  (default)     the node's index of published datasets (one paged query). Each dataset listed is
                checked against its DatasetPublished tx, proved committed in its block (with
                --genesis: in a block cosigned by the genesis quorum of nodes), so none is made up;
                but the node alone says the list is complete: a lying node can leave one out.
  --from-chain  reads every block of the node's chain from genesis and re-derives the state, as
                audit verify does (every signature, state transition, tx root, state hash and the
                hash chain), then lists the published datasets of that state; the head block must
                carry --quorum cosignatures (default: the genesis quorum) from the nodes of the
                --genesis file, which is required. Nothing is trusted to the node but freshness: it
                can serve an older head, so the height listed to is printed (on stderr). Costs a
                read of the whole chain.
  --export FILE re-derives the state from an export file (fedtune audit export) offline; complete
                for the chain the file holds, as fresh as whoever made it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := checkQuorumFlags(quorum, genesisPath); err != nil {
				return fmt.Errorf("dataset ls: %w", err)
			}
			if fromChain && exportPath != "" {
				return errors.New("dataset ls: give --from-chain (read the chain from --addr) or --export FILE, not both")
			}
			if quorum > 0 && !fromChain {
				return errors.New("dataset ls: --quorum applies to --from-chain (the default mode checks each dataset's block against the genesis quorum when --genesis is given)")
			}
			print := func(all []ledger.Dataset) error {
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), publishedSummaries(all))
				}
				if len(all) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no dataset is published on this chain (`fedtune dataset publish` publishes one)")
					return nil
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tDIGEST\tLICENCE\tSAMPLES\tSHARDS\tOWNER\tHEIGHT")
				for _, d := range all {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\n", d.Name, d.Digest, d.Licence, d.Samples, len(d.Shards), d.Owner[:min(16, len(d.Owner))], d.Height)
				}
				return tw.Flush()
			}
			if exportPath != "" {
				e, err := readExportFile(exportPath)
				if err != nil {
					return fmt.Errorf("dataset ls: %w", err)
				}
				ls, rep, err := audit.PublishedDatasets(ctx, e)
				if err != nil {
					return fmt.Errorf("dataset ls --export %s: %w", exportPath, err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "every published dataset of %s: its chain re-derived from genesis to height %d (head %x)\n", exportPath, rep.Height, rep.HeadHash[:8])
				return print(listings(ls))
			}
			if fromChain {
				return datasetLsFromChain(ctx, cmd, addr, genesisPath, quorum, print)
			}
			return withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				all, err := listPublished(ctx, c)
				if err != nil {
					return fmt.Errorf("dataset ls: %w", err)
				}
				return print(all)
			})
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&fromChain, "from-chain", false, "list from the whole chain, re-derived and checked against the head's cosignatures, not from the node's index (needs --genesis)")
	cmd.Flags().IntVar(&quorum, "quorum", 0, "with --from-chain: cosignatures from the genesis nodes the head block must carry (0: the genesis quorum)")
	cmd.Flags().StringVar(&exportPath, "export", "", "list from an export file (fedtune audit export), re-derived offline")
	return cmd
}

// datasetLsFromChain is `dataset ls --from-chain`: every block of the
// node's chain, re-derived (audit.PublishedDatasets), its head anchored in
// the cosignatures of a quorum of the genesis nodes (audit.AnchorHead).
func datasetLsFromChain(ctx context.Context, cmd *cobra.Command, addr, genesisPath string, quorum int, print func([]ledger.Dataset) error) error {
	if genesisPath == "" {
		return errors.New("dataset ls --from-chain: --genesis is required (the chain is re-derived from the genesis file, and its nodes' cosignatures anchor the head)")
	}
	genesis, err := os.ReadFile(genesisPath)
	if err != nil {
		return fmt.Errorf("dataset ls: --genesis: %w", err)
	}
	_, nodes, err := genesisNodes(genesisPath)
	if err != nil {
		return fmt.Errorf("dataset ls: --genesis: %w", err)
	}
	if quorum > len(nodes) {
		return fmt.Errorf("dataset ls: --quorum %d exceeds the %d nodes of --genesis %s", quorum, len(nodes), genesisPath)
	}
	warn := cmd.ErrOrStderr()
	return withClient(ctx, addr, genesisPath, warn, func(c *client.Client) error {
		e, err := streamChain(ctx, c, genesis, addr, warn, nil)
		if err != nil {
			return fmt.Errorf("dataset ls --from-chain: %w", err)
		}
		ls, rep, err := audit.PublishedDatasets(ctx, e)
		if err != nil {
			return fmt.Errorf("dataset ls --from-chain: the chain %s serves does not verify: %w", addr, err)
		}
		head, err := anchorHead(ctx, c, genesisPath, quorum, rep)
		if err != nil {
			return fmt.Errorf("dataset ls --from-chain: %w", err)
		}
		fmt.Fprintf(warn, "every published dataset of the chain to height %d (head %x, cosigned by %d of the %d genesis nodes; re-derived from genesis)\n",
			head.Height, head.Hash[:8], len(head.Cosigners), head.Nodes)
		return print(listings(ls))
	})
}

// anchorHead checks that the head of the chain rep verified carries
// quorum (0: the genesis quorum) cosignatures from the nodes of the
// genesis file at genesisPath (audit.AnchorHead).
func anchorHead(ctx context.Context, c *client.Client, genesisPath string, quorum int, rep *audit.Report) (*audit.HeadAnchor, error) {
	chainID, nodes, err := genesisNodes(genesisPath)
	if err != nil {
		return nil, fmt.Errorf("--genesis: %w", err)
	}
	if quorum == 0 {
		quorum = len(nodes)/2 + 1
		if p := c.Pin(); p != nil {
			quorum = p.Quorum
		}
	}
	return audit.AnchorHead(ctx, c, rep.Height, rep.HeadHash, audit.AnchorOptions{Quorum: quorum, ChainID: chainID, Nodes: nodes})
}

// listings drops the tx positions of ls.
func listings(ls []ledger.PublishedListing) []ledger.Dataset {
	out := make([]ledger.Dataset, len(ls))
	for i := range ls {
		out[i] = ls[i].Dataset
	}
	return out
}

// publishedSummary is a published dataset without its manifest and
// shard list, as `dataset ls --json` prints it.
type publishedSummary struct {
	Name    string `json:"name"`
	Digest  string `json:"digest"`
	Licence string `json:"licence"`
	Format  string `json:"format"`
	Samples uint64 `json:"samples"`
	Bytes   uint64 `json:"bytes"`
	Shards  int    `json:"shards"`
	Root    string `json:"root"`
	Owner   string `json:"owner"`
	Height  uint64 `json:"height"`
}

func publishedSummaries(all []ledger.Dataset) []publishedSummary {
	out := make([]publishedSummary, 0, len(all))
	for _, d := range all {
		out = append(out, publishedSummary{Name: d.Name, Digest: d.Digest, Licence: d.Licence, Format: d.Format, Samples: d.Samples,
			Bytes: d.Bytes, Shards: len(d.Shards), Root: d.Root, Owner: d.Owner, Height: d.Height})
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func newDatasetShowCmd() *cobra.Command {
	var addr, genesisPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show DIGEST|NAME",
		Short: "Describe a dataset on the ledger: licence and what it asks, counts, root, card and shards",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				rec, sm, err := publishedRecord(ctx, c, args[0])
				if err != nil {
					return fmt.Errorf("dataset show %s: %w", args[0], err)
				}
				if asJSON {
					r := *rec
					r.Manifest = ""
					return writeJSON(cmd.OutOrStdout(), r)
				}
				w := cmd.OutOrStdout()
				kind := "registered private data (only its manifest left the owner)"
				if sm != nil {
					kind = "published (owner's signature on the manifest checked)"
				}
				fmt.Fprintf(w, "dataset  %s\nname     %s\nkind     %s\nowner    %s\nlicence  %s\n", rec.Digest, rec.Name, kind, rec.Owner, rec.Licence)
				for _, line := range licenceLines(rec.Licence) {
					fmt.Fprintf(w, "         %s\n", line)
				}
				fmt.Fprintf(w, "samples  %d (%d bytes)\nroot     %s\nheight   %d (tx %s)\n", rec.Samples, rec.Bytes, rec.Root, rec.Height, rec.TxHash)
				if sm != nil {
					fmt.Fprintf(w, "format   %s\nleaves   %s\n", sm.Format, sm.Leaves)
					if sm.Card != "" {
						fmt.Fprintf(w, "card     %s\n", sm.Card)
					}
					fmt.Fprintf(w, "shards   %d\n", len(sm.Shards))
					for k, s := range sm.Shards {
						fmt.Fprintf(w, "  %4d  %s  samples %d..%d  %d bytes\n", k, s.Digest, s.First, s.First+s.Samples-1, s.Bytes)
					}
				}
				return nil
			})
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the ledger's record as JSON")
	return cmd
}

// licenceLines says, for each licence ID of expr, what it asks of its user.
func licenceLines(expr string) []string {
	var out []string
	for _, id := range spdx.IDs(expr) {
		t, ok := spdx.Lookup(id)
		switch {
		case !ok:
			out = append(out, id+": not in fedtune's licence table; read the licence")
		case t.PublicDomain:
			out = append(out, id+": no conditions (public domain dedication)")
		default:
			out = append(out, id+": "+strings.Join(t.Obligations(), "; "))
		}
	}
	return out
}
