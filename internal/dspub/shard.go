package dspub

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fedtune/fedtune/internal/digest"
)

// ErrShard is wrapped by every *ShardError.
var ErrShard = errors.New("dspub: shard does not match the manifest")

// ErrLeaves is wrapped by DecodeLeaves' errors.
var ErrLeaves = errors.New("dspub: bad leaves file")

// ShardError says which shard, and which sample of it when known, does not
// match the manifest.
type ShardError struct {
	Shard  int    // index in Manifest.Shards
	Digest string // the digest the manifest gives the shard
	// Sample is the dataset-wide index of the first bad sample, Line its
	// line in the shard (1-based); both meaningful only if HasSample.
	Sample    uint64
	Line      int
	HasSample bool
	Reason    string
}

// Error implements error.
func (e *ShardError) Error() string {
	if e.HasSample {
		return fmt.Sprintf("dspub: shard %d (%s): sample %d (line %d of the shard): %s", e.Shard, e.Digest, e.Sample, e.Line, e.Reason)
	}
	return fmt.Sprintf("dspub: shard %d (%s): %s", e.Shard, e.Digest, e.Reason)
}

// Unwrap returns ErrShard.
func (e *ShardError) Unwrap() error { return ErrShard }

// EncodeShard encodes sample texts as a shard: each a canonical JSON
// string on its own line.
func EncodeShard(texts []string) []byte {
	var buf bytes.Buffer
	for _, t := range texts {
		b, err := json.Marshal(t)
		if err != nil {
			panic("dspub: marshal string: " + err.Error()) // a string always marshals
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// DecodeShard decodes a shard into its sample texts. Every line must be a
// JSON string in canonical form ending in a line break; invalid UTF-8 and
// non-canonical escapes are errors, so a shard has one byte form. The
// error names the line (1-based).
func DecodeShard(data []byte) ([]string, error) {
	var out []string
	line := 0
	for len(data) > 0 {
		line++
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return out, fmt.Errorf("line %d: no final line break", line)
		}
		raw := data[:i]
		data = data[i+1:]
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return out, fmt.Errorf("line %d: not a JSON string: %v", line, err)
		}
		if canon, _ := json.Marshal(s); !bytes.Equal(canon, raw) {
			return out, fmt.Errorf("line %d: not in canonical form (valid UTF-8, escaped as encoding/json does)", line)
		}
		out = append(out, s)
	}
	return out, nil
}

// EncodeLeaves concatenates the leaves.
func EncodeLeaves(leaves [][32]byte) []byte {
	out := make([]byte, 0, 32*len(leaves))
	for _, l := range leaves {
		out = append(out, l[:]...)
	}
	return out
}

// DecodeLeaves splits a leaves file of m: exactly m.Samples leaves of 32
// bytes whose SHA-256 is m.Leaves, sorted bytewise (duplicates allowed).
// The Merkle root is checked by datasets.VerifyLeaves.
func DecodeLeaves(m *Manifest, data []byte) ([][32]byte, error) {
	if got := digest.Bytes(data); got != m.Leaves {
		return nil, fmt.Errorf("%w: its digest is %s, the manifest says %s", ErrLeaves, got, m.Leaves)
	}
	if uint64(len(data)) != 32*m.Samples {
		return nil, fmt.Errorf("%w: %d bytes, want %d (32 per sample)", ErrLeaves, len(data), 32*m.Samples)
	}
	out := make([][32]byte, m.Samples)
	for i := range out {
		copy(out[i][:], data[32*i:])
		if i > 0 && bytes.Compare(out[i-1][:], out[i][:]) > 0 {
			return nil, fmt.Errorf("%w: leaf %d sorts before leaf %d", ErrLeaves, i, i-1)
		}
	}
	return out, nil
}

// CheckShard checks that data is shard k of m: its digest, its sample
// count and every sample's hash against leaves (m's leaves, already
// checked against the root). A mismatch is a *ShardError naming the shard
// and, when it is one sample's fault, the sample: the first whose hash is
// not its leaf. It returns the shard's texts.
func CheckShard(m *Manifest, k int, data []byte, leaves [][32]byte) ([]string, error) {
	if k < 0 || k >= len(m.Shards) {
		return nil, fmt.Errorf("dspub: shard %d: the manifest has %d shards", k, len(m.Shards))
	}
	if uint64(len(leaves)) != m.Samples {
		return nil, fmt.Errorf("dspub: %d leaves for a manifest of %d samples", len(leaves), m.Samples)
	}
	sh := m.Shards[k]
	serr := func(sample uint64, line int, has bool, format string, args ...any) error {
		return &ShardError{Shard: k, Digest: sh.Digest, Sample: sample, Line: line, HasSample: has, Reason: fmt.Sprintf(format, args...)}
	}
	texts, derr := DecodeShard(data)
	// Find the first sample that is not its leaf, even if the shard is
	// malformed further on, so the error names it.
	n := min(uint64(len(texts)), sh.Samples)
	for j := uint64(0); j < n; j++ {
		h := sha256.Sum256([]byte(texts[j]))
		if want := leaves[sh.First+j]; h != want {
			return nil, serr(sh.First+j, int(j)+1, true, "its hash %s is not the published leaf %s", hex.EncodeToString(h[:]), hex.EncodeToString(want[:]))
		}
	}
	if derr != nil {
		return nil, serr(sh.First+uint64(len(texts)), len(texts)+1, uint64(len(texts)) < sh.Samples, "%v", derr)
	}
	if uint64(len(texts)) != sh.Samples {
		if uint64(len(texts)) < sh.Samples {
			return nil, serr(sh.First+uint64(len(texts)), len(texts)+1, true, "missing: the shard has %d samples, the manifest says %d", len(texts), sh.Samples)
		}
		return nil, serr(0, 0, false, "%d samples, the manifest says %d", len(texts), sh.Samples)
	}
	var total uint64
	for _, t := range texts {
		total += uint64(len(t))
	}
	if total != sh.Bytes {
		return nil, serr(0, 0, false, "its samples hold %d bytes, the manifest says %d", total, sh.Bytes)
	}
	if got := digest.Bytes(data); got != sh.Digest {
		return nil, serr(0, 0, false, "its digest is %s (every sample matches its leaf, but the bytes differ)", got)
	}
	return texts, nil
}
