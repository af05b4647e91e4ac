package cli

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/trainer"
)

func init() { register(newDatasetCmd) }

func newDatasetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dataset",
		Short: "Dataset manifests (sample hashes, Merkle root, licence), ledger registration and membership proofs",
		Long: "Dataset manifests describe a dataset without revealing it: the SHA-256 of every sample's text (a line, a JSONL\n" +
			"record's text, or a file, as `datasets.Load` reads them), an RFC 6962 Merkle root over the sorted hashes, counts,\n" +
			"licence, source and owner, signed by the owner's key (a DSSE envelope). The manifest digest is sha256 of the file.",
	}
	cmd.AddCommand(newDatasetManifestCmd(), newDatasetRegisterCmd(), newDatasetVerifyManifestCmd(), newDatasetProveCmd())
	cmd.AddCommand(newDatasetScanCmd(), newDatasetAttestCmd())
	cmd.AddCommand(publishedCmds()...)
	return cmd
}

func newDatasetManifestCmd() *cobra.Command {
	var licence, source, description, name, format, keyPath, out string
	cmd := &cobra.Command{
		Use:   "manifest PATH --license SPDX-ID --source TEXT --key OWNER.key -o manifest.json",
		Short: "Hash a dataset's samples and write its signed manifest",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" || out == "" || source == "" || licence == "" {
				return errors.New("dataset manifest: --license, --source, --key and -o are required")
			}
			key, err := ledger.LoadKey(keyPath)
			if err != nil {
				return fmt.Errorf("dataset manifest: %w", err)
			}
			opts := datasets.Options{Format: format}
			f, err := datasets.DetectFormat(args[0], opts)
			if err != nil {
				return fmt.Errorf("dataset manifest: %w", err)
			}
			d, err := loadDataset(args[0], opts)
			if err != nil {
				return fmt.Errorf("dataset manifest: %w", err)
			}
			m, _, err := datasets.BuildManifest(d, datasets.ManifestOptions{Name: name, Format: f, Licence: licence, Source: source,
				Description: description, Owner: ledger.KeyID(key.Public().(ed25519.PublicKey))})
			if err != nil {
				return fmt.Errorf("dataset manifest %s: %w", args[0], err)
			}
			sm, err := datasets.SignManifest(key, m)
			if err != nil {
				return fmt.Errorf("dataset manifest: %w", err)
			}
			if err := audit.WriteFileAtomic(out, 0o644, func(w io.Writer) error { _, err := w.Write(sm.Envelope); return err }); err != nil {
				return fmt.Errorf("dataset manifest: write %s: %w", out, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "manifest %s: %d samples, %d bytes, root %s, digest %s\n", out, sm.Samples, sm.Bytes, sm.Root, sm.Digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&licence, "license", "", "SPDX licence expression (e.g. Apache-2.0, CC-BY-4.0, LicenseRef-name)")
	cmd.Flags().StringVar(&source, "source", "", "where the data came from")
	cmd.Flags().StringVar(&description, "description", "", "free text")
	cmd.Flags().StringVar(&name, "name", "", "dataset name (default: the path's base name)")
	cmd.Flags().StringVar(&format, "format", "", "loader layout: text, dir or jsonl (default: by extension)")
	cmd.Flags().StringVar(&keyPath, "key", "", "the owner's (trainer's) private key")
	cmd.Flags().StringVarP(&out, "output", "o", "", "manifest file to write")
	return cmd
}

// readManifestFile reads and decodes a manifest file; pub may be nil.
func readManifestFile(path string, pub ed25519.PublicKey) (*datasets.SignedManifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sm, err := datasets.DecodeManifest(data, pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return sm, nil
}

func newDatasetRegisterCmd() *cobra.Command {
	var addr, genesisPath, keyPath string
	cmd := &cobra.Command{
		Use:   "register MANIFEST --key KEY [--addr ADDR]",
		Short: "Record a manifest on the ledger (DatasetRegistered, signed by its owner)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" {
				return errors.New("dataset register: --key is required")
			}
			key, err := ledger.LoadKey(keyPath)
			if err != nil {
				return fmt.Errorf("dataset register: %w", err)
			}
			sm, err := readManifestFile(args[0], key.Public().(ed25519.PublicKey))
			if err != nil {
				return fmt.Errorf("dataset register: %w (the manifest must be signed by the key registering it)", err)
			}
			if err := submitSigned(cmd, addr, genesisPath, keyPath, trainer.RegisterTx(sm)); err != nil {
				return fmt.Errorf("dataset register: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "dataset %s registered: %d samples, root %s\n", sm.Digest, sm.Samples, sm.Root)
			return nil
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&keyPath, "key", "", "the owner's private key (must be the manifest's owner)")
	return cmd
}

func newDatasetVerifyManifestCmd() *cobra.Command {
	var format, pubPath string
	cmd := &cobra.Command{
		Use:   "verify-manifest MANIFEST PATH",
		Short: "Check that a dataset's samples give the manifest's root, sample count and size",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var pub ed25519.PublicKey
			if pubPath != "" {
				var err error
				if pub, err = ledger.LoadPublicKey(pubPath); err != nil {
					return fmt.Errorf("dataset verify-manifest: %w", err)
				}
			}
			sm, err := readManifestFile(args[0], pub)
			if err != nil {
				return fmt.Errorf("dataset verify-manifest: %w", err)
			}
			if format == "" {
				format = sm.Format
			}
			d, err := loadDataset(args[1], datasets.Options{Format: format})
			if err != nil {
				return fmt.Errorf("dataset verify-manifest: %w", err)
			}
			if err := datasets.VerifyManifest(&sm.Manifest, d); err != nil {
				return fmt.Errorf("dataset verify-manifest %s against %s: %w", args[0], args[1], err)
			}
			signed := "signature not checked (pass --pub OWNER.pub)"
			if pub != nil {
				signed = "signed by " + sm.Owner
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK: %s matches %s (%d samples, %d bytes, root %s); %s\n", args[0], args[1], sm.Samples, sm.Bytes, sm.Root, signed)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "loader layout (default: the manifest's)")
	cmd.Flags().StringVar(&pubPath, "pub", "", "the owner's public (or private) key file, to check the signature")
	return cmd
}

func newDatasetProveCmd() *cobra.Command {
	var sampleFile, sampleFormat, sampleID, manifestPath, format, out string
	cmd := &cobra.Command{
		Use:   "prove PATH (--sample FILE | --id SAMPLE-ID) [--manifest M]",
		Short: "Print a JSON proof that a sample is (inclusion) or is not (exclusion) in a dataset",
		Long: "Print a JSON proof that a sample is (inclusion) or is not (exclusion) in the dataset at PATH.\n" +
			"--sample FILE: the sample as the dataset loader reads one, as `audit contains` takes it: a .jsonl or .ndjson\n" +
			"file is one JSONL record (its text as the jsonl loader builds it), any other file is the sample's text (its\n" +
			"content without a leading BOM and trailing line breaks); --sample-format text|jsonl says which.\n" +
			"--id: a sample of PATH by its loader ID (file:line, or the file path in a folder).\n" +
			"--manifest: check the dataset against it first and embed it in the proof, so `fedtune audit check-proof\n" +
			"--dataset DIGEST` can tie the proof to the ledger.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (sampleFile == "") == (sampleID == "") {
				return errors.New("dataset prove: give exactly one of --sample FILE or --id SAMPLE-ID")
			}
			var sm *datasets.SignedManifest
			if manifestPath != "" {
				var err error
				if sm, err = readManifestFile(manifestPath, nil); err != nil {
					return fmt.Errorf("dataset prove: %w", err)
				}
				if format == "" {
					format = sm.Format
				}
			}
			d, err := loadDataset(args[0], datasets.Options{Format: format})
			if err != nil {
				return fmt.Errorf("dataset prove: %w", err)
			}
			if sm != nil {
				if err := datasets.VerifyManifest(&sm.Manifest, d); err != nil {
					return fmt.Errorf("dataset prove: %w", err)
				}
			}
			var leaf [32]byte
			if sampleFile != "" {
				if leaf, err = audit.SampleLeaf(sampleFile, sampleFormat); err != nil {
					return fmt.Errorf("dataset prove: --sample: %w", err)
				}
			} else {
				var text string
				found := false
				for _, s := range d.Samples {
					if s.ID == sampleID {
						text, found = s.Text, true
						break
					}
				}
				if !found {
					return fmt.Errorf("dataset prove: %s has no sample with ID %q", args[0], sampleID)
				}
				leaf = datasets.SampleDigest(text)
			}
			hs, _ := datasets.SampleHashes(d)
			p, err := datasets.NewTree(hs).Prove(leaf)
			if err != nil {
				return fmt.Errorf("dataset prove: %w", err)
			}
			if sm != nil {
				p.Manifest = string(sm.Envelope)
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(p.Encode())
				return err
			}
			if err := audit.WriteFileAtomic(out, 0o644, func(w io.Writer) error { _, err := io.Copy(w, bytes.NewReader(p.Encode())); return err }); err != nil {
				return fmt.Errorf("dataset prove: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s proof of sample %s written to %s\n", p.Kind, p.Sample, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&sampleFile, "sample", "", "file holding the sample (one JSONL record for .jsonl/.ndjson, else its text)")
	cmd.Flags().StringVar(&sampleFormat, "sample-format", "", "how the --sample file is a sample: text or jsonl (default: jsonl for .jsonl/.ndjson, else text)")
	cmd.Flags().StringVar(&sampleID, "id", "", "a sample of the dataset by its ID")
	cmd.Flags().StringVar(&manifestPath, "manifest", "", "the dataset's manifest: checked, then embedded in the proof")
	cmd.Flags().StringVar(&format, "format", "", "loader layout (default: the manifest's, or by extension)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the proof here instead of stdout")
	return cmd
}

// loadDataset reads the dataset at path as a trainer node does: an
// instruction file (trainer.ReadInstruct: one sample per record) when the
// format is auto or jsonl and the file is one, else datasets.Load.
func loadDataset(path string, opts datasets.Options) (*datasets.Dataset, error) {
	if opts.Format == datasets.FormatAuto || opts.Format == datasets.FormatJSONL {
		if d, ok := trainer.ReadInstruct(path); ok {
			return d, nil
		}
	}
	return datasets.Load(path, opts)
}
