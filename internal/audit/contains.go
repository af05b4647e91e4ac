package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

// The results of a dataset in a Contains report.
const (
	// Included: a verified inclusion proof.
	Included = "included"
	// Excluded: a verified exclusion proof.
	Excluded = "excluded"
	// Unanswered: no proof that verifies (Detail says why).
	Unanswered = "unanswered"
)

// Reasons of an unanswered dataset, the start of its Detail.
const (
	ReasonNotConnected = "trainer not connected"
	ReasonTimeout      = "timeout"
	ReasonRefused      = "refused"
	ReasonBusy         = "busy"
	ReasonBadProof     = "proof does not verify"
	ReasonNoRoot       = "no root on the ledger"
)

// ErrUnanswered is returned by ContainsReport.Err when a dataset gave no
// valid proof.
var ErrUnanswered = errors.New("audit: not every dataset answered with a valid proof")

// SampleProver asks trainers for proofs: the coordinator's ProveSample
// (coordinatorv1.CoordinatorClient satisfies it).
type SampleProver interface {
	ProveSample(ctx context.Context, in *coordinatorv1.ProveSampleRequest, opts ...grpc.CallOption) (*coordinatorv1.ProveSampleResponse, error)
}

// ContainsResult is one dataset's outcome.
type ContainsResult struct {
	Dataset string `json:"dataset"`
	Name    string `json:"name"`
	Trainer string `json:"trainer"`
	Root    string `json:"root"`
	Samples uint64 `json:"samples"`
	Result  string `json:"result"` // Included, Excluded or Unanswered
	Detail  string `json:"detail,omitempty"`
	// Proof is the verified proof (nil when unanswered).
	Proof *datasets.Proof `json:"proof,omitempty"`
}

// ContainsReport is the outcome of asking every dataset of a model's
// lineage about one sample.
type ContainsReport struct {
	Model    string           `json:"model"`
	Sample   string           `json:"sample"` // the sample's leaf hash, hex
	Datasets []ContainsResult `json:"datasets"`
	// Anchored, when set, says that the lineage and the datasets' roots
	// were checked against cosigned blocks (see Anchor).
	Anchored *AnchorReport `json:"anchored,omitempty"`
}

// Err returns nil when every dataset answered with a valid proof, else an
// error wrapping ErrUnanswered that counts them.
func (r *ContainsReport) Err() error {
	n := 0
	for _, d := range r.Datasets {
		if d.Result == Unanswered {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d of %d datasets unanswered", ErrUnanswered, n, len(r.Datasets))
}

// Included returns the datasets proven to hold the sample.
func (r *ContainsReport) Included() []ContainsResult {
	var out []ContainsResult
	for _, d := range r.Datasets {
		if d.Result == Included {
			out = append(out, d)
		}
	}
	return out
}

// LineageDatasets returns the datasets behind a lineage, each once, sorted
// by name then digest.
func LineageDatasets(l *ledger.Lineage) []ledger.Dataset {
	seen := map[string]bool{}
	var out []ledger.Dataset
	for _, d := range l.Datasets {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b ledger.Dataset) int {
		if c := cmpStr(a.Name, b.Name); c != 0 {
			return c
		}
		return cmpStr(a.Digest, b.Digest)
	})
	return out
}

// SampleLeaf returns the leaf hash of the sample in a file, as the dataset
// loader defines a sample for format: "text" (or "dir"): the file's
// content without a leading byte order mark and trailing line breaks (the
// rule of `fedtune dataset prove --sample`); "jsonl": the file holds one
// JSONL record, hashed as the JSONL loader hashes it (its text field, or
// prompt and response joined). "" picks jsonl for .jsonl and .ndjson
// files, text otherwise.
func SampleLeaf(path, format string) ([32]byte, error) {
	if format == "" {
		format = datasets.FormatText
		if strings.HasSuffix(path, ".jsonl") || strings.HasSuffix(path, ".ndjson") {
			format = datasets.FormatJSONL
		}
	}
	switch format {
	case datasets.FormatText, datasets.FormatDir:
		data, err := os.ReadFile(path)
		if err != nil {
			return [32]byte{}, err
		}
		return datasets.SampleDigest(datasets.SampleFileText(data)), nil
	case datasets.FormatJSONL:
		d, err := datasets.Load(path, datasets.Options{Format: datasets.FormatJSONL})
		if err != nil {
			return [32]byte{}, err
		}
		if len(d.Samples) != 1 {
			return [32]byte{}, fmt.Errorf("%s holds %d JSONL records; give one sample per file", path, len(d.Samples))
		}
		return datasets.SampleDigest(d.Samples[0].Text), nil
	}
	return [32]byte{}, fmt.Errorf("sample format %q is not text, dir or jsonl", format)
}

// Limits of the coordinator's ProveSample that Contains keeps to.
const (
	// MaxAskDatasets is how many datasets one ProveSample names (the
	// coordinator's limit, coordinator.MaxProveDatasets): Contains asks
	// about more in batches of this size, one after another.
	MaxAskDatasets = 64
	// MaxAnswerBytes is the largest ProveSample response Contains accepts
	// (gRPC's default is 4 MiB; MaxAskDatasets answers of at most 16 KiB
	// each fit well within it).
	MaxAnswerBytes = 8 << 20
)

// Contains asks every dataset in ds, through the coordinator and each
// dataset's owning trainer, whether the sample with hash leaf is among its
// samples, and checks every answer itself against the root and sample
// count the ledger recorded (ds); it trusts neither the coordinator nor the
// trainers. timeout bounds each trainer's answer. The error is for the
// request as a whole (the coordinator unreachable or refusing); a dataset
// without a valid proof is an Unanswered result (see ContainsReport.Err).
//
// What the results mean, and what they rest on:
//   - Included: the sample's hash is a leaf of the tree whose root the
//     ledger records for the dataset.
//   - Excluded: the sample is not in the tree its owner registered,
//     assuming the owner built that tree as the manifest format requires
//     (over sorted, distinct leaves). The ledger keeps only the root, so
//     an owner that registered a root over unsorted leaves could prove a
//     sample it holds absent; an exclusion proof cannot rule that out.
//   - The roots and sample counts in ds are taken as given: Contains
//     trusts whoever read them from the ledger (the CLI reads them from
//     the one ledger node named by --ledger, and with --quorum anchors
//     them in cosigned blocks first; see Anchor).
func Contains(ctx context.Context, prover SampleProver, model string, leaf [32]byte, ds []ledger.Dataset, timeout time.Duration) (*ContainsReport, error) {
	return ContainsWithLeaves(ctx, prover, nil, model, leaf, ds, timeout)
}

// LeavesSource downloads a blob by digest, checking it; *artifact.Client
// is one.
type LeavesSource interface {
	Download(ctx context.Context, digest string, w io.Writer) (int64, error)
}

// ContainsWithLeaves is Contains where a published dataset (whose leaves
// file every member may read from the artifact store) is answered here,
// from its leaves read through leaves, instead of by its owner: the proof
// is built over the leaves and checked like a trainer's, against the
// ledger's root and sample count. With leaves nil every dataset is asked
// through the coordinator.
func ContainsWithLeaves(ctx context.Context, prover SampleProver, leaves LeavesSource, model string, leaf [32]byte, ds []ledger.Dataset, timeout time.Duration) (*ContainsReport, error) {
	rep := &ContainsReport{Model: model, Sample: hex.EncodeToString(leaf[:])}
	for _, d := range ds {
		rep.Datasets = append(rep.Datasets, ContainsResult{Dataset: d.Digest, Name: d.Name, Trainer: d.Owner, Root: d.Root, Samples: d.Samples})
	}
	// Each dataset once: the coordinator refuses a request naming one twice.
	var refs []*coordinatorv1.DatasetRef
	asked := map[string]bool{}
	byDataset := map[string]*coordinatorv1.ProofAnswer{}
	for _, d := range ds {
		if d.Published && leaves != nil && !asked[d.Digest] {
			asked[d.Digest] = true
			byDataset[d.Digest] = publishedAnswer(ctx, leaves, d, leaf)
		}
		if !asked[d.Digest] {
			asked[d.Digest] = true
			refs = append(refs, &coordinatorv1.DatasetRef{Dataset: d.Digest, Trainer: d.Owner})
		}
	}
	for start := 0; start < len(refs); start += MaxAskDatasets {
		batch := refs[start:min(start+MaxAskDatasets, len(refs))]
		if err := askBatch(ctx, prover, leaf, batch, timeout, byDataset); err != nil {
			return nil, err
		}
	}
	for i := range rep.Datasets {
		r := &rep.Datasets[i]
		a := byDataset[r.Dataset]
		if a == nil {
			r.Result, r.Detail = Unanswered, "the coordinator returned no answer for this dataset"
			continue
		}
		*r = CheckAnswer(ds[i], leaf, a)
		if ds[i].Published && leaves != nil && r.Result != Unanswered {
			r.Detail += " (proved here from its published leaves)"
		}
		if ds[i].Published && leaves == nil && r.Result == Unanswered {
			r.Detail += " (published data: give the artifact store to prove it from its published leaves)"
		}
	}
	return rep, nil
}

// publishedAnswer proves leaf in or out of the published dataset d from
// its leaves file: the answer's proof is then checked by CheckAnswer like
// a trainer's. A leaves file that cannot be read, or is not d's (digest,
// length, order), gives a refused answer saying why.
func publishedAnswer(ctx context.Context, src LeavesSource, d ledger.Dataset, leaf [32]byte) *coordinatorv1.ProofAnswer {
	refused := func(format string, args ...any) *coordinatorv1.ProofAnswer {
		return &coordinatorv1.ProofAnswer{Dataset: d.Digest, Trainer: d.Owner, Status: coordinatorv1.ProofStatus_PROOF_STATUS_REFUSED,
			Detail: "published leaves " + d.Leaves + ": " + fmt.Sprintf(format, args...)}
	}
	var buf bytes.Buffer
	if _, err := src.Download(ctx, d.Leaves, &buf); err != nil {
		return refused("%v", err)
	}
	data := buf.Bytes()
	if got := digest.Bytes(data); got != d.Leaves {
		return refused("the store's file hashes to %s", got)
	}
	if uint64(len(data)) != 32*d.Samples {
		return refused("%d bytes, want 32 for each of the %d samples", len(data), d.Samples)
	}
	hs := make([][32]byte, d.Samples)
	for i := range hs {
		copy(hs[i][:], data[32*i:])
		if i > 0 && bytes.Compare(hs[i-1][:], hs[i][:]) > 0 {
			return refused("leaf %d is out of order", i)
		}
	}
	p, err := datasets.NewTree(hs).Prove(leaf)
	if err != nil {
		return refused("%v", err)
	}
	return &coordinatorv1.ProofAnswer{Dataset: d.Digest, Trainer: d.Owner, Status: coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED, Proof: p.Encode()}
}

// askBatch asks one ProveSample about the datasets in batch and files the
// answers by dataset digest (the first answer for each dataset asked).
func askBatch(ctx context.Context, prover SampleProver, leaf [32]byte, batch []*coordinatorv1.DatasetRef, timeout time.Duration, byDataset map[string]*coordinatorv1.ProofAnswer) error {
	req := &coordinatorv1.ProveSampleRequest{LeafHash: leaf[:], TimeoutMs: timeout.Milliseconds(), Datasets: batch}
	asked := map[string]bool{}
	for _, d := range batch {
		asked[d.Dataset] = true
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout+15*time.Second)
		defer cancel()
	}
	resp, err := prover.ProveSample(ctx, req, grpc.MaxCallRecvMsgSize(MaxAnswerBytes))
	if err != nil {
		return fmt.Errorf("audit: ask the coordinator: %w", err)
	}
	for _, a := range resp.Answers {
		if a != nil && asked[a.Dataset] && byDataset[a.Dataset] == nil {
			byDataset[a.Dataset] = a
		}
	}
	return nil
}

// CheckAnswer judges one coordinator answer for dataset d (as the ledger
// records it) and sample leaf: a proof is decoded from the answer's bytes,
// which come from a trainer and are not trusted, and verified against d's
// root and sample count; its sample must be leaf. Anything else is
// Unanswered with the reason.
func CheckAnswer(d ledger.Dataset, leaf [32]byte, a *coordinatorv1.ProofAnswer) ContainsResult {
	r := ContainsResult{Dataset: d.Digest, Name: d.Name, Trainer: d.Owner, Root: d.Root, Samples: d.Samples, Result: Unanswered}
	switch a.Status {
	case coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED:
	case coordinatorv1.ProofStatus_PROOF_STATUS_NOT_CONNECTED:
		r.Detail = ReasonNotConnected
		return r
	case coordinatorv1.ProofStatus_PROOF_STATUS_TIMEOUT:
		r.Detail = ReasonTimeout + ": " + a.Detail
		return r
	case coordinatorv1.ProofStatus_PROOF_STATUS_REFUSED:
		r.Detail = ReasonRefused + ": " + a.Detail
		return r
	case coordinatorv1.ProofStatus_PROOF_STATUS_BUSY:
		r.Detail = ReasonBusy + ": " + a.Detail
		return r
	default:
		r.Detail = fmt.Sprintf("the coordinator answered with status %v (%s)", a.Status, a.Detail)
		return r
	}
	if a.Trainer != "" && a.Trainer != d.Owner {
		r.Detail = fmt.Sprintf("%s: answered for trainer %s, the ledger's owner is %s", ReasonBadProof, short(a.Trainer), short(d.Owner))
		return r
	}
	root, err := LedgerRoot(&d)
	if err != nil {
		r.Detail = ReasonNoRoot + ": " + err.Error()
		return r
	}
	p, err := datasets.DecodeProof(a.Proof)
	if err != nil {
		r.Detail = ReasonBadProof + ": " + strings.TrimPrefix(err.Error(), datasets.ErrBadProof.Error()+": ")
		return r
	}
	if want := hex.EncodeToString(leaf[:]); p.Sample != want {
		r.Detail = fmt.Sprintf("%s: it is about sample %s…, not %s…", ReasonBadProof, p.Sample[:12], want[:12])
		return r
	}
	if err := p.Verify(root, d.Samples); err != nil {
		r.Detail = ReasonBadProof + ": " + strings.TrimPrefix(err.Error(), datasets.ErrBadProof.Error()+": ")
		return r
	}
	r.Proof = p
	if p.Included() {
		r.Result, r.Detail = Included, fmt.Sprintf("leaf %d of %d", p.Leaf.Index, d.Samples)
	} else {
		r.Result, r.Detail = Excluded, "between adjacent leaves"+neighbours(p)
	}
	return r
}

func neighbours(p *datasets.Proof) string {
	switch {
	case p.Left != nil && p.Right != nil:
		return fmt.Sprintf(" %d and %d", p.Left.Index, p.Right.Index)
	case p.Right != nil:
		return " (before the first leaf)"
	case p.Left != nil:
		return " (after the last leaf)"
	}
	return " (empty tree)"
}

// ContainsFormats are the output formats of RenderContains.
var ContainsFormats = []string{"table", "json"}

// RenderContains writes a report as a table (dataset name, digest, trainer,
// result, detail) or as indented JSON.
func RenderContains(w io.Writer, r *ContainsReport, format string) error {
	switch format {
	case "json":
		out, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(out, '\n'))
		return err
	case "table", "":
		fmt.Fprintf(w, "model %s, sample %s\n", r.Model, r.Sample)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DATASET\tDIGEST\tTRAINER\tRESULT\tDETAIL")
		for _, d := range r.Datasets {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", dash(d.Name), short(d.Dataset), short(d.Trainer), d.Result, oneLine(d.Detail))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if r.Anchored != nil {
			fmt.Fprintf(w, "%s\n", r.Anchored)
		}
		return nil
	}
	return fmt.Errorf("audit: unknown format %q (want %s)", format, strings.Join(ContainsFormats, " or "))
}

// oneLine keeps a detail on one table row.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}
