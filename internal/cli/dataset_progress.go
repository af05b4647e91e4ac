package cli

import (
	"context"
	"io"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/trainer"
)

// countingSink is a trainer.BlobSink that reports each finished upload
// (a shard, the leaves, the card) on a progress line.
type countingSink struct {
	trainer.BlobSink
	p *progress
	n int
}

func (s *countingSink) Upload(ctx context.Context, digest string, r io.Reader, size int64) (artifact.UploadResult, error) {
	res, err := s.BlobSink.Upload(ctx, digest, r, size)
	if err == nil {
		s.n++
		s.p.Set(s.n, "")
	}
	return res, err
}

// countingSource is a trainer.BlobSource that reports each finished
// download on a progress line.
type countingSource struct {
	trainer.BlobSource
	p *progress
	n int
}

func (s *countingSource) Download(ctx context.Context, digest string, w io.Writer) (int64, error) {
	n, err := s.BlobSource.Download(ctx, digest, w)
	if err == nil {
		s.n++
		s.p.Set(s.n, "")
	}
	return n, err
}

// publishBlobs is how many blobs publishing samples samples in shards of
// per (0: the default) uploads: each shard, the leaves and the card.
func publishBlobs(samples, per int, card bool) int {
	if per <= 0 {
		per = datasets.DefaultShardSamples
	}
	n := (samples+per-1)/per + 1
	if card {
		n++
	}
	return n
}
