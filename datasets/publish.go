package datasets

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dspub"
)

// DefaultShardSamples is the number of samples per shard Publish cuts by
// default.
const DefaultShardSamples = 1024

// PublishOptions are what Publish cannot learn from the samples.
type PublishOptions struct {
	Name    string
	Format  string // dspub.FormatText or dspub.FormatInstruct
	Licence string // SPDX expression
	Card    string // the card's digest, "" for none
	Owner   string // the publisher's member ID
	// ShardSamples is the most samples one shard holds (0:
	// DefaultShardSamples); the shard count must stay within
	// dspub.MaxShards.
	ShardSamples int
}

// Publication is a dataset cut for publishing: its manifest (unsigned),
// the shards' bytes (Shards[k] is the shard Manifest.Shards[k] names) and
// the leaves file.
type Publication struct {
	Manifest dspub.Manifest
	Shards   [][]byte
	Leaves   []byte
	Tree     *Tree
}

// Publish orders d's samples by their leaf value (SampleDigest, ties by
// text, which are equal), cuts them into shards of at most
// o.ShardSamples, and fills the manifest: the Merkle root of NewTree over
// the leaves, each shard's digest, range and bytes, the counts. The
// result is validated.
func Publish(d *Dataset, o PublishOptions) (*Publication, error) {
	if len(d.Samples) == 0 {
		return nil, fmt.Errorf("datasets: publish %s: %w", d.Name, ErrEmpty)
	}
	per := o.ShardSamples
	if per <= 0 {
		per = DefaultShardSamples
	}
	if n := (len(d.Samples) + per - 1) / per; n > dspub.MaxShards {
		return nil, fmt.Errorf("datasets: publish %s: %d samples in shards of %d make %d shards, limit %d: use larger shards", d.Name, len(d.Samples), per, n, dspub.MaxShards)
	}
	type leaf struct {
		h    [32]byte
		text string
	}
	ls := make([]leaf, len(d.Samples))
	for i, s := range d.Samples {
		ls[i] = leaf{SampleDigest(s.Text), s.Text}
	}
	slices.SortStableFunc(ls, func(a, b leaf) int { return bytes.Compare(a.h[:], b.h[:]) })
	hs := make([][32]byte, len(ls))
	for i := range ls {
		hs[i] = ls[i].h
	}
	t := NewTree(hs)
	root := t.Root()
	p := &Publication{Tree: t, Leaves: dspub.EncodeLeaves(hs)}
	m := dspub.Manifest{Version: dspub.Version, Name: o.Name, Format: o.Format, Licence: o.Licence, Card: o.Card, Owner: o.Owner,
		Samples: uint64(len(ls)), Root: hex.EncodeToString(root[:]), Leaves: digest.Bytes(p.Leaves)}
	for first := 0; first < len(ls); first += per {
		end := min(first+per, len(ls))
		texts := make([]string, 0, end-first)
		var n uint64
		for _, l := range ls[first:end] {
			texts = append(texts, l.text)
			n += uint64(len(l.text))
		}
		b := dspub.EncodeShard(texts)
		p.Shards = append(p.Shards, b)
		m.Shards = append(m.Shards, dspub.Shard{Digest: digest.Bytes(b), First: uint64(first), Samples: uint64(end - first), Bytes: n})
		m.Bytes += n
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("datasets: publish %s: %w", d.Name, err)
	}
	p.Manifest = m
	return p, nil
}

// VerifyLeaves decodes a leaves file of m (dspub.DecodeLeaves) and checks
// that the Merkle root of NewTree over it is m's root. It returns the
// tree, whose leaves the shards are then checked against.
func VerifyLeaves(m *dspub.Manifest, data []byte) (*Tree, error) {
	leaves, err := dspub.DecodeLeaves(m, data)
	if err != nil {
		return nil, err
	}
	t := NewTree(leaves)
	root := t.Root()
	if got := hex.EncodeToString(root[:]); got != m.Root {
		return nil, fmt.Errorf("%w: the leaves give root %s, the manifest says %s", dspub.ErrLeaves, got, m.Root)
	}
	return t, nil
}
