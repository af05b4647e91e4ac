package cli

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/scan"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

// scanToolName is the tool name a pii-scan attestation records.
const scanToolName = "fedtune dataset scan"

// scanProgressBytes is the file size from which a scan reports progress
// (on stderr).
const scanProgressBytes = 8 << 20

// ScanReport is the full report `dataset scan --report` writes; its
// SHA-256 is what the attestation records.
type ScanReport struct {
	Tool    ledger.AttestationTool `json:"tool"`
	Kind    string                 `json:"kind"`
	Dataset string                 `json:"dataset,omitempty"` // manifest digest, when attested
	Input   ScanInput              `json:"input"`
	Terms   ScanTerms              `json:"terms"`
	Pass    bool                   `json:"pass"`
	Samples int                    `json:"samples"`
	Counts  map[scan.Kind]int      `json:"counts"`
	// Findings are those of the --json output, in sample order.
	Findings []scan.Finding `json:"findings"`
}

// ScanInput describes the scanned file.
type ScanInput struct {
	Path   string      `json:"path"`
	SHA256 string      `json:"sha256"`
	Bytes  int         `json:"bytes"`
	Format scan.Format `json:"format"`
}

// ScanTerms describes the terms list, if any.
type ScanTerms struct {
	Count  int    `json:"count"`
	SHA256 string `json:"sha256,omitempty"`
}

func newDatasetScanCmd() *cobra.Command {
	var termsPath, reportPath, keyPath, manifestPath, datasetDigest, attestPath, addr, genesisPath, format string
	var asJSON, attest, submit bool
	cmd := &cobra.Command{
		Use:   "scan PATH [--terms FILE] [--json] [--report FILE [--attest --key AUDITOR.key (--manifest M | --dataset DIGEST) [--submit]]]",
		Short: "Find personal data (e-mail, phone, card, IP, listed terms) in a text or JSONL file; report and attest",
		Long: "Scan every sample of PATH (a line of text, or a JSONL record with every string in it) for e-mail addresses,\n" +
			"phone numbers (international +CC and US, UK, DE, FR, IN national formats), payment card numbers that pass Luhn,\n" +
			"IPv4/IPv6 addresses and the terms of --terms (one per line, case-insensitive, whole words); see the datasets/scan\n" +
			"package for the exact rules. --json prints {\"samples\": N, \"findings\": [{\"sample\": I, \"kind\": K, \"text\": T}]}\n" +
			"with I counted from 0 in file order. A scan with findings still exits 0; its result is in the output.\n\n" +
			"--report writes the full report; --attest also signs a DSSE in-toto attestation (kind pii-scan: pass when there are\n" +
			"no findings, the counts, this binary's SHA-256, the report's SHA-256) about the dataset --manifest names (PATH must\n" +
			"give its root) or --dataset DIGEST names; --submit records it on the ledger as DatasetAttested (auditors only).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if attest && (reportPath == "" || keyPath == "") {
				return errors.New("dataset scan: --attest needs --report FILE and --key AUDITOR.key")
			}
			if attest && (manifestPath == "") == (datasetDigest == "") {
				return errors.New("dataset scan: --attest needs exactly one of --manifest MANIFEST (checked against PATH) or --dataset DIGEST")
			}
			if submit && !attest {
				return errors.New("dataset scan: --submit needs --attest")
			}
			if datasetDigest != "" {
				if err := digest.Check("--dataset", datasetDigest); err != nil {
					return fmt.Errorf("dataset scan: %w", err)
				}
			}
			var terms []string
			var termsDigest string
			if termsPath != "" {
				data, err := os.ReadFile(termsPath)
				if err != nil {
					return fmt.Errorf("dataset scan: terms: %w", err)
				}
				if terms, err = scan.ParseTerms(data); err != nil {
					return fmt.Errorf("dataset scan: %s: %w", termsPath, err)
				}
				termsDigest = digest.Bytes(data)
			}
			sc, err := scan.New(terms)
			if err != nil {
				return fmt.Errorf("dataset scan: %s: %w", termsPath, err)
			}
			if st, err := os.Stat(path); err != nil {
				return fmt.Errorf("dataset scan: %w", err)
			} else if st.IsDir() {
				return fmt.Errorf("dataset scan: %s is a folder; scan reads one text or JSONL file", path)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("dataset scan: %w", err)
			}
			f := scan.Format(format)
			if f == "" {
				f = scan.DetectFormat(path, data)
			}
			if len(data) >= scanProgressBytes {
				p := newProgress(cmd.ErrOrStderr(), "scan "+filepath.Base(path)+" bytes", len(data))
				sc.Progress = func(done int) { p.Set(done, "") }
				defer p.Finish()
			}
			res, err := sc.Scan(path, data, f)
			if err != nil {
				return fmt.Errorf("dataset scan: %w", err)
			}
			if sc.Progress != nil {
				sc.Progress(len(data))
			}
			out := cmd.OutOrStdout()
			if asJSON {
				b, err := json.Marshal(res)
				if err != nil {
					return err
				}
				if _, err := fmt.Fprintf(out, "%s\n", b); err != nil {
					return err
				}
			} else {
				printScan(out, path, f, res)
			}
			if reportPath == "" {
				return nil
			}
			tool, err := scanTool()
			if err != nil {
				return fmt.Errorf("dataset scan: %w", err)
			}
			rep := ScanReport{Tool: tool, Kind: ledger.KindPIIScan, Input: ScanInput{Path: filepath.Base(path), SHA256: digest.Bytes(data), Bytes: len(data), Format: f},
				Terms: ScanTerms{Count: len(terms), SHA256: termsDigest}, Pass: len(res.Findings) == 0, Samples: res.Samples,
				Counts: res.Counts(), Findings: res.Findings}
			var key ed25519.PrivateKey
			name := filepath.Base(path)
			if attest {
				if key, err = ledger.LoadKey(keyPath); err != nil {
					return fmt.Errorf("dataset scan: %w", err)
				}
				rep.Dataset = datasetDigest
				if manifestPath != "" {
					sm, err := readManifestFile(manifestPath, nil)
					if err != nil {
						return fmt.Errorf("dataset scan: %w", err)
					}
					d, err := loadDataset(path, datasets.Options{Format: sm.Format})
					if err != nil {
						return fmt.Errorf("dataset scan: %w", err)
					}
					if err := datasets.VerifyManifest(&sm.Manifest, d); err != nil {
						return fmt.Errorf("dataset scan: %s is not the dataset of %s: %w", path, manifestPath, err)
					}
					rep.Dataset, name = sm.Digest, sm.Name
				}
			}
			rb, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				return err
			}
			rb = append(rb, '\n')
			if err := atomicfile.Write(reportPath, rb, 0o644); err != nil {
				return fmt.Errorf("dataset scan: write report: %w", err)
			}
			status := cmd.ErrOrStderr()
			if !asJSON {
				status = out
			}
			fmt.Fprintf(status, "report %s: sha256 %s\n", reportPath, digest.Bytes(rb))
			if !attest {
				return nil
			}
			p := scanPredicate(rep, digest.Bytes(rb))
			env, err := ledger.SignStatement(key, ledger.NewStatement(rep.Dataset, name, p))
			if err != nil {
				return fmt.Errorf("dataset scan: %w", err)
			}
			if attestPath == "" {
				attestPath = strings.TrimSuffix(reportPath, ".json") + ".attestation.json"
			}
			if err := atomicfile.Write(attestPath, env, 0o644); err != nil {
				return fmt.Errorf("dataset scan: write attestation: %w", err)
			}
			fmt.Fprintf(status, "attestation %s: %s of dataset %s by %s: %s\n", attestPath, p.Kind, rep.Dataset,
				ledger.KeyID(key.Public().(ed25519.PublicKey)), passText(p.Result.Pass))
			if !submit {
				return nil
			}
			if err := submitSigned(cmd, addr, genesisPath, keyPath, ledger.DatasetAttested{Dataset: rep.Dataset, Predicate: p, Statement: env}); err != nil {
				return fmt.Errorf("dataset scan: submit: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&termsPath, "terms", "", "file of terms to find, one per line (# comments)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"samples": N, "findings": [...]} instead of text`)
	cmd.Flags().StringVar(&format, "format", "", "text or jsonl (default: detected)")
	cmd.Flags().StringVar(&reportPath, "report", "", "write the full report (JSON) here")
	cmd.Flags().BoolVar(&attest, "attest", false, "sign a pii-scan attestation of the report (needs --key, --report and --manifest or --dataset)")
	cmd.Flags().StringVar(&keyPath, "key", "", "the auditor's private key")
	cmd.Flags().StringVar(&manifestPath, "manifest", "", "the dataset's signed manifest: PATH must give its root; the attestation names its digest")
	cmd.Flags().StringVar(&datasetDigest, "dataset", "", "the digest of the dataset on the ledger, when there is no manifest file to check")
	cmd.Flags().StringVarP(&attestPath, "attestation", "o", "", "where to write the attestation (default: the report's name with .attestation.json)")
	cmd.Flags().BoolVar(&submit, "submit", false, "record the attestation on the ledger (DatasetAttested)")
	addrFlag(cmd, &addr, &genesisPath)
	return cmd
}

func newDatasetAttestCmd() *cobra.Command {
	var addr, genesisPath, keyPath string
	cmd := &cobra.Command{
		Use:   "attest ATTESTATION --key AUDITOR.key [--addr ADDR]",
		Short: "Record a signed attestation (from dataset scan --attest) on the ledger as DatasetAttested",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" {
				return errors.New("dataset attest: --key is required (the auditor that signed the attestation)")
			}
			key, err := ledger.LoadKey(keyPath)
			if err != nil {
				return fmt.Errorf("dataset attest: %w", err)
			}
			env, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("dataset attest: %w", err)
			}
			st, err := ledger.VerifyStatement(env, key.Public().(ed25519.PublicKey))
			if err != nil {
				return fmt.Errorf("dataset attest: %s: %w", args[0], err)
			}
			body := ledger.DatasetAttested{Dataset: st.Dataset(), Predicate: st.Predicate, Statement: env}
			if err := submitSigned(cmd, addr, genesisPath, keyPath, body); err != nil {
				return fmt.Errorf("dataset attest: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "dataset %s attested: %s %s\n", body.Dataset, body.Predicate.Kind, passText(body.Predicate.Result.Pass))
			return nil
		},
	}
	addrFlag(cmd, &addr, &genesisPath)
	cmd.Flags().StringVar(&keyPath, "key", "", "the auditor's private key (the attestation's signer)")
	return cmd
}

// scanPredicate is the attestation predicate of a scan report whose bytes
// have digest reportDigest.
func scanPredicate(rep ScanReport, reportDigest string) ledger.AttestationPredicate {
	counts := map[string]uint64{}
	for k, n := range rep.Counts {
		counts[string(k)] = uint64(n)
	}
	return ledger.AttestationPredicate{Kind: ledger.KindPIIScan, Tool: rep.Tool, Report: reportDigest,
		Result: ledger.AttestationResult{Pass: rep.Pass, Samples: uint64(rep.Samples), Findings: uint64(len(rep.Findings)), Counts: counts}}
}

// scanTool names this program and the SHA-256 of its executable.
func scanTool() (ledger.AttestationTool, error) {
	exe, err := os.Executable()
	if err != nil {
		return ledger.AttestationTool{}, fmt.Errorf("find this program's executable: %w", err)
	}
	d, err := digest.File(exe)
	if err != nil {
		return ledger.AttestationTool{}, fmt.Errorf("digest of this program: %w", err)
	}
	return ledger.AttestationTool{Name: scanToolName, Digest: d}, nil
}

func passText(pass bool) string {
	if pass {
		return "pass"
	}
	return "fail"
}

// printScan writes the human-readable result.
func printScan(w io.Writer, path string, f scan.Format, res *scan.Result) {
	c := res.Counts()
	var parts []string
	for _, k := range scan.Kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, c[k]))
	}
	fmt.Fprintf(w, "%s: %d samples (%s), %d findings (%s)\n", path, res.Samples, f, len(res.Findings), strings.Join(parts, ", "))
	fs := append([]scan.Finding(nil), res.Findings...)
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Sample < fs[j].Sample })
	for _, x := range fs {
		fmt.Fprintf(w, "  sample %d: %-5s %q\n", x.Sample, x.Kind, x.Text)
	}
}
