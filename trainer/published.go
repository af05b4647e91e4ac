package trainer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// BlobSource reads content-addressed blobs; *artifact.Client is one. On a
// digest mismatch it must still have written the bytes it received to w
// (artifact.Client.Download does), so that the caller can say which
// sample of a shard is bad.
type BlobSource interface {
	Download(ctx context.Context, digest string, w io.Writer) (int64, error)
}

// BlobSink stores content-addressed blobs; *artifact.Client is one.
type BlobSink interface {
	Upload(ctx context.Context, digest string, r io.Reader, size int64) (artifact.UploadResult, error)
}

var (
	_ BlobSource = (*artifact.Client)(nil)
	_ BlobSink   = (*artifact.Client)(nil)
)

// PublishDataset cuts d into shards (datasets.Publish), uploads the
// shards, the leaves file and card (nil for none) to sink, and signs the
// manifest with key, whose ID must be o.Owner (filled in when empty). The
// caller records it with ledger.DatasetPublished{Manifest:
// string(signed.Envelope)}.
func PublishDataset(ctx context.Context, sink BlobSink, key ed25519.PrivateKey, d *datasets.Dataset, card []byte, o datasets.PublishOptions) (*dspub.Signed, error) {
	if o.Owner == "" {
		o.Owner = ledger.KeyID(key.Public().(ed25519.PublicKey))
	}
	if card != nil {
		o.Card = digest.Bytes(card)
	}
	p, err := datasets.Publish(d, o)
	if err != nil {
		return nil, err
	}
	sm, err := dspub.Sign(key, &p.Manifest)
	if err != nil {
		return nil, err
	}
	put := func(what string, b []byte) error {
		dg := digest.Bytes(b)
		if _, err := sink.Upload(ctx, dg, bytes.NewReader(b), int64(len(b))); err != nil {
			return fmt.Errorf("publish %s: upload %s %s: %w", o.Name, what, dg, err)
		}
		return nil
	}
	if card != nil {
		if err := put("card", card); err != nil {
			return nil, err
		}
	}
	if err := put("leaves", p.Leaves); err != nil {
		return nil, err
	}
	for k, b := range p.Shards {
		if err := put(fmt.Sprintf("shard %d of %d", k, len(p.Shards)), b); err != nil {
			return nil, err
		}
	}
	return sm, nil
}

// PublishedManifest returns the manifest of a published dataset record,
// checking that it is the record's (its digest, its root and counts) and,
// when pub is not nil, that the owner's key signed it.
func PublishedManifest(rec *ledger.Dataset, pub ed25519.PublicKey) (*dspub.Signed, error) {
	if !rec.Published {
		return nil, fmt.Errorf("dataset %s (%q) is registered private data, not published: its samples are not in the artifact store", rec.Digest, rec.Name)
	}
	sm, err := dspub.Decode([]byte(rec.Manifest), pub)
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", rec.Digest, err)
	}
	if sm.Digest != rec.Digest || sm.Root != rec.Root || sm.Samples != rec.Samples || sm.Owner != rec.Owner {
		return nil, fmt.Errorf("dataset %s: the record's manifest is %s (root %s, %d samples, owner %s); the record says root %s, %d samples, owner %s",
			rec.Digest, sm.Digest, sm.Root, sm.Samples, sm.Owner, rec.Root, rec.Samples, rec.Owner)
	}
	return sm, nil
}

// PublishedReader reads the samples of a published dataset from a blob
// source, checking each against the manifest: the leaves file against the
// root once, then every shard it reads against the leaves.
type PublishedReader struct {
	M      *dspub.Signed
	src    BlobSource
	leaves [][32]byte
}

// OpenPublished downloads and checks the leaves of m.
func OpenPublished(ctx context.Context, src BlobSource, m *dspub.Signed) (*PublishedReader, error) {
	var buf bytes.Buffer
	if _, err := src.Download(ctx, m.Leaves, &buf); err != nil && !errors.Is(err, artifact.ErrDigestMismatch) {
		return nil, fmt.Errorf("dataset %s: leaves %s: %w", m.Name, m.Leaves, err)
	}
	t, err := datasets.VerifyLeaves(&m.Manifest, buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", m.Name, err)
	}
	return &PublishedReader{M: m, src: src, leaves: t.Leaves()}, nil
}

// Shard downloads shard k and checks it; a mismatch is a
// *dspub.ShardError naming the shard and the first bad sample.
func (r *PublishedReader) Shard(ctx context.Context, k int) ([]string, error) {
	var texts []string
	err := r.StreamShard(ctx, k, func(s string) error {
		texts = append(texts, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return texts, nil
}

// StreamShard downloads shard k, checking each sample against its leaf as
// its bytes arrive (dspub.ShardChecker), and hands each checked sample to
// emit; only one sample is held at a time. A mismatch is a
// *dspub.ShardError naming the shard and the first bad sample; samples
// already emitted must then be discarded (the shard's digest and counts
// are known only at its end).
func (r *PublishedReader) StreamShard(ctx context.Context, k int, emit func(text string) error) error {
	if k < 0 || k >= len(r.M.Shards) {
		return fmt.Errorf("dataset %s: no shard %d of %d", r.M.Name, k, len(r.M.Shards))
	}
	c, err := dspub.NewShardChecker(&r.M.Manifest, k, r.leaves, emit)
	if err != nil {
		return fmt.Errorf("dataset %s: %w", r.M.Name, err)
	}
	_, derr := r.src.Download(ctx, r.M.Shards[k].Digest, c)
	// The checker's own error names the sample; prefer it to the
	// download's (a write error, or a digest mismatch, which Close
	// explains).
	cerr := c.Close()
	var se *dspub.ShardError
	if errors.As(cerr, &se) {
		return fmt.Errorf("dataset %s: %w", r.M.Name, cerr)
	}
	if derr != nil {
		return fmt.Errorf("dataset %s: shard %d (%s): %w", r.M.Name, k, r.M.Shards[k].Digest, derr)
	}
	if cerr != nil {
		return fmt.Errorf("dataset %s: shard %d: %w", r.M.Name, k, cerr)
	}
	return nil
}

// Range returns samples [first, end) of the dataset, reading and checking
// only the shards that hold them.
func (r *PublishedReader) Range(ctx context.Context, first, end uint64) ([]string, error) {
	if first >= end || end > r.M.Samples {
		return nil, fmt.Errorf("dataset %s: range [%d, %d) is not within its %d samples", r.M.Name, first, end, r.M.Samples)
	}
	var out []string
	for k := r.M.ShardOf(first); k < len(r.M.Shards) && r.M.Shards[k].First < end; k++ {
		texts, err := r.Shard(ctx, k)
		if err != nil {
			return nil, err
		}
		sh := r.M.Shards[k]
		lo, hi := max(first, sh.First)-sh.First, min(end, sh.First+sh.Samples)-sh.First
		out = append(out, texts[lo:hi]...)
	}
	return out, nil
}

// FetchPublished reads every shard of m from src, checks them all, and
// only then writes dir: manifest.json (the signed manifest), data.jsonl
// (the samples in order: {"text": …} records for text data, the records
// themselves for instruction data, which datasets.Load and
// instruct.ReadDataset read back to the same leaves) and, if the manifest
// names one, README.md (the card, checked against its digest).
//
// The samples stream to a temporary file beside data.jsonl as each is
// checked against its leaf (memory holds one sample, not the dataset); a
// bad shard (a *dspub.ShardError naming it and its first bad sample) or
// card removes the temporary files and leaves dir as it was. Each file is
// replaced atomically (internal/atomicfile).
func FetchPublished(ctx context.Context, src BlobSource, m *dspub.Signed, dir string) error {
	r, err := OpenPublished(ctx, src, m)
	if err != nil {
		return err
	}
	made := false
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		made = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err = atomicfile.WriteFunc(filepath.Join(dir, "data.jsonl"), 0o644, func(f *os.File) error {
		w := bufio.NewWriterSize(f, 1<<16)
		for k := range m.Shards {
			err := r.StreamShard(ctx, k, func(s string) error {
				if m.Format == dspub.FormatInstruct {
					w.WriteString(s)
				} else {
					b, _ := json.Marshal(map[string]string{datasets.DefaultTextField: s})
					w.Write(b)
				}
				return w.WriteByte('\n')
			})
			if err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		// The card, inside data.jsonl's write: a bad card leaves neither.
		if m.Card == "" {
			return nil
		}
		return atomicfile.WriteFunc(filepath.Join(dir, "README.md"), 0o644, func(cf *os.File) error {
			if _, err := src.Download(ctx, m.Card, cf); err != nil {
				return fmt.Errorf("dataset %s: card %s: %w", m.Name, m.Card, err)
			}
			return nil
		})
	})
	if err != nil {
		if made {
			os.Remove(dir) // empty: every file was written to a temporary one
		}
		return unwrapWrite(err)
	}
	return atomicfile.Write(filepath.Join(dir, "manifest.json"), m.Envelope, 0o644)
}

// unwrapWrite drops atomicfile's "write PATH: " prefix from a check that
// failed inside a write, so the error reads as the check's.
func unwrapWrite(err error) error {
	var se *dspub.ShardError
	if errors.As(err, &se) {
		if u := errors.Unwrap(err); u != nil {
			return u
		}
	}
	return err
}

// roundInfo is what a round's data was: the dataset the update names and
// the published ranges it trained on.
type roundInfo struct {
	dataset string
	ranges  []ledger.SampleRange
}

// roundData returns the data task t trains on: the trainer's own data, if
// any (not in a spot-checked job, whose updates are on published data
// alone), and the published samples round t.Round gave it
// (RoundOpened.ranges on the ledger), each shard read from the artifact
// store and checked against the published leaves and root before use.
func (n *Node) roundData(ctx context.Context, lc *client.Client, src BlobSource, t *coordinatorv1.Task) (Data, roundInfo, error) {
	info := roundInfo{dataset: n.DatasetDigest()}
	var r *ledger.Round
	for {
		var err error
		r, err = lc.Round(ctx, t.JobId, t.Round)
		if err == nil {
			break
		}
		if !errors.Is(err, ledger.ErrRecordNotFound) {
			return Data{}, info, fmt.Errorf("round %d of job %s: %w", t.Round, t.JobId, err)
		}
		select { // the ledger node this trainer reads may lag the round's opening
		case <-ctx.Done():
			return Data{}, info, fmt.Errorf("round %d of job %s: %w", t.Round, t.JobId, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	info.ranges = ledger.RangesOf(r.Ranges, n.id)
	if len(info.ranges) == 0 {
		if n.manifest == nil {
			return Data{}, info, fmt.Errorf("%w: round %d of job %s gives this trainer no published samples, and it has no data of its own", ErrTask, t.Round, t.JobId)
		}
		return n.data, info, nil
	}
	own, hasOwn := n.data, n.manifest != nil
	if hasOwn {
		// A spot-checked job (verify) takes updates on its published
		// data alone, so that a verifier can replay any of them.
		job, err := lc.Job(ctx, t.JobId)
		if err != nil {
			return Data{}, info, fmt.Errorf("job %s: %w", t.JobId, err)
		}
		if job.Recipe.Verify != nil {
			own, hasOwn, info.dataset = Data{}, false, ""
			n.log.InfoContext(ctx, "spot-checked job: training on the published samples alone", "job", t.JobId, "round", t.Round)
		}
	}
	d, err := RoundData(ctx, lc, src, t.JobId, t.Round, own, hasOwn, info.ranges, n.log)
	if err != nil {
		return Data{}, info, err
	}
	if info.dataset == "" {
		info.dataset = info.ranges[0].Dataset
	}
	return d, info, nil
}

// RoundData returns the data a trainer trains on in round n of job: its
// own data own (hasOwn: it has any) followed by the published samples of
// ranges, each shard read from src and checked against the published
// leaves and root before use. A verifier replaying a trainer's round
// builds the same data, sample for sample, with no own data.
func RoundData(ctx context.Context, lc *client.Client, src BlobSource, job string, n uint64, own Data, hasOwn bool, ranges []ledger.SampleRange, log *slog.Logger) (Data, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := &datasets.Dataset{Name: fmt.Sprintf("%s-round-%d", job, n)}
	instruct, first := own.Instruct, !hasOwn
	if own.Dataset != nil {
		out.Samples = append(out.Samples, own.Dataset.Samples...)
	}
	readers := map[string]*PublishedReader{}
	for _, rg := range ranges {
		rd, ok := readers[rg.Dataset]
		if !ok {
			rec, err := lc.Dataset(ctx, rg.Dataset)
			if err != nil {
				return Data{}, fmt.Errorf("published dataset %s: %w", rg.Dataset, err)
			}
			mem, err := lc.Member(ctx, rec.Owner)
			if err != nil {
				return Data{}, fmt.Errorf("publisher %s of dataset %s: %w", rec.Owner, rg.Dataset, err)
			}
			pub, err := ledger.ParsePublicKey(mem.PublicKey)
			if err != nil {
				return Data{}, fmt.Errorf("publisher %s: %w", rec.Owner, err)
			}
			sm, err := PublishedManifest(rec, pub)
			if err != nil {
				return Data{}, err
			}
			if rd, err = OpenPublished(ctx, src, sm); err != nil {
				return Data{}, err
			}
			readers[rg.Dataset] = rd
		}
		isInstruct := rd.M.Format == dspub.FormatInstruct
		if first {
			instruct, first = isInstruct, false
		} else if isInstruct != instruct {
			return Data{}, fmt.Errorf("%w: published dataset %s is %s data; the rest of this round's data is not", ErrTask, rd.M.Name, rd.M.Format)
		}
		texts, err := rd.Range(ctx, rg.First, rg.End)
		if err != nil {
			return Data{}, err
		}
		for i, s := range texts {
			out.Samples = append(out.Samples, datasets.Sample{ID: fmt.Sprintf("%s:%d", rd.M.Name, rg.First+uint64(i)), Text: s})
		}
		log.InfoContext(ctx, "published samples checked", "dataset", rd.M.Name, "first", rg.First, "end", rg.End)
	}
	return Data{Dataset: out, Instruct: instruct}, nil
}
