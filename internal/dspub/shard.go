package dspub

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"

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
	var texts []string
	c, err := NewShardChecker(m, k, leaves, func(s string) error {
		texts = append(texts, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(data); err != nil {
		return nil, err
	}
	if err := c.Close(); err != nil {
		return nil, err
	}
	return texts, nil
}

// ShardChecker checks shard k of a manifest as its bytes stream through
// it, holding one line at a time: each sample is checked against its leaf
// (and its canonical form) as its line ends and then handed to emit; Close
// checks what only the whole shard shows (its sample count, its bytes,
// its digest). Errors are those of CheckShard. A caller that writes what
// emit gets must discard it when Write or Close fails.
type ShardChecker struct {
	m      *Manifest
	k      int
	leaves [][32]byte
	emit   func(string) error
	hash   hash.Hash
	line   []byte // the current line, not yet ended
	n      uint64 // samples seen
	bytes  uint64 // their texts' bytes
	size   uint64 // shard bytes written
	max    uint64 // most bytes the shard's samples can encode to
	err    error
}

// NewShardChecker returns a checker of shard k of m; emit is called with
// each sample's text, in order, once it checks.
func NewShardChecker(m *Manifest, k int, leaves [][32]byte, emit func(text string) error) (*ShardChecker, error) {
	if k < 0 || k >= len(m.Shards) {
		return nil, fmt.Errorf("dspub: shard %d: the manifest has %d shards", k, len(m.Shards))
	}
	if uint64(len(leaves)) != m.Samples {
		return nil, fmt.Errorf("dspub: %d leaves for a manifest of %d samples", len(leaves), m.Samples)
	}
	sh := m.Shards[k]
	// A byte of text encodes to at most 6 (\u00XX); each sample adds its
	// quotes and line break.
	return &ShardChecker{m: m, k: k, leaves: leaves, emit: emit, hash: sha256.New(), max: 6*sh.Bytes + 3*sh.Samples}, nil
}

func (c *ShardChecker) fail(sample uint64, line int, has bool, format string, args ...any) error {
	sh := c.m.Shards[c.k]
	c.err = &ShardError{Shard: c.k, Digest: sh.Digest, Sample: sample, Line: line, HasSample: has, Reason: fmt.Sprintf(format, args...)}
	return c.err
}

// Write checks the next bytes of the shard.
func (c *ShardChecker) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n := len(p)
	sh := c.m.Shards[c.k]
	if c.size += uint64(len(p)); c.size > c.max {
		return 0, c.fail(0, 0, false, "more than the %d bytes its %d samples of %d bytes can encode to", c.max, sh.Samples, sh.Bytes)
	}
	c.hash.Write(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.line = append(c.line, p...)
			break
		}
		var raw []byte
		if len(c.line) > 0 {
			c.line = append(c.line, p[:i]...)
			raw = c.line
		} else {
			raw = p[:i]
		}
		p = p[i+1:]
		if err := c.sample(raw); err != nil {
			return 0, err
		}
		c.line = c.line[:0]
	}
	return n, nil
}

// sample checks one complete line.
func (c *ShardChecker) sample(raw []byte) error {
	sh := c.m.Shards[c.k]
	line := int(c.n) + 1
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return c.fail(sh.First+c.n, line, c.n < sh.Samples, "line %d: not a JSON string: %v", line, err)
	}
	if canon, _ := json.Marshal(s); !bytes.Equal(canon, raw) {
		return c.fail(sh.First+c.n, line, c.n < sh.Samples, "line %d: not in canonical form (valid UTF-8, escaped as encoding/json does)", line)
	}
	if c.n < sh.Samples {
		h := sha256.Sum256([]byte(s))
		if want := c.leaves[sh.First+c.n]; h != want {
			return c.fail(sh.First+c.n, line, true, "its hash %s is not the published leaf %s", hex.EncodeToString(h[:]), hex.EncodeToString(want[:]))
		}
	}
	c.n++
	if c.n > sh.Samples {
		return c.fail(0, 0, false, "%d samples or more, the manifest says %d", c.n, sh.Samples)
	}
	c.bytes += uint64(len(s))
	if c.emit != nil {
		if err := c.emit(s); err != nil {
			c.err = err
			return err
		}
	}
	return nil
}

// Close checks the end of the shard: no partial last line, its sample
// count, its bytes and its digest.
func (c *ShardChecker) Close() error {
	if c.err != nil {
		return c.err
	}
	sh := c.m.Shards[c.k]
	if len(c.line) > 0 {
		line := int(c.n) + 1
		return c.fail(sh.First+c.n, line, c.n < sh.Samples, "line %d: no final line break", line)
	}
	if c.n < sh.Samples {
		return c.fail(sh.First+c.n, int(c.n)+1, true, "missing: the shard has %d samples, the manifest says %d", c.n, sh.Samples)
	}
	if c.bytes != sh.Bytes {
		return c.fail(0, 0, false, "its samples hold %d bytes, the manifest says %d", c.bytes, sh.Bytes)
	}
	if got := hex.EncodeToString(c.hash.Sum(nil)); got != sh.Digest {
		return c.fail(0, 0, false, "its digest is %s (every sample matches its leaf, but the bytes differ)", got)
	}
	return nil
}
