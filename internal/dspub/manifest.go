package dspub

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/internal/spdx"
)

// PayloadType is the DSSE payloadType of a signed publication manifest.
const PayloadType = "application/vnd.fedtune.dataset-publication+json"

// Version is the manifest format version this package writes.
const Version = 1

// Limits of a manifest. MaxManifestBytes keeps a manifest, carried inside
// a DatasetPublished tx, within the ledger's default max_tx_bytes.
const (
	MaxManifestBytes = 96 << 10
	MaxShards        = 512
	MaxNameLen       = 128
)

// Formats of a published dataset: what a sample's text is.
const (
	// FormatText: each sample is a training text (a line of a text file,
	// a JSONL record's text).
	FormatText = "text"
	// FormatInstruct: each sample is one instruction record, the JSON
	// text of a line of an instruction file (datasets/instruct).
	FormatInstruct = "instruct"
)

// ErrManifest is wrapped by every error about a malformed, badly signed or
// non-canonical manifest.
var ErrManifest = errors.New("dspub: bad manifest")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Shard is one content-addressed piece of a published dataset: the SHA-256
// of its bytes, the samples it holds (First up to First+Samples, in leaf
// order) and the total bytes of their texts.
type Shard struct {
	Digest  string `json:"digest"`
	First   uint64 `json:"first"`
	Samples uint64 `json:"samples"`
	Bytes   uint64 `json:"bytes"`
}

// Manifest describes a published dataset. It is the payload of a DSSE
// envelope signed by Owner; DatasetPublished carries the envelope and the
// ledger records its SHA-256 as the dataset's digest.
type Manifest struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	Format  string `json:"format"` // FormatText or FormatInstruct
	Licence string `json:"licence"`
	// Card is the digest of the dataset card (a README) in the artifact
	// store, "" for none.
	Card    string `json:"card,omitempty"`
	Owner   string `json:"owner"`   // the publisher's member ID
	Samples uint64 `json:"samples"` // number of samples (leaves)
	Bytes   uint64 `json:"bytes"`   // total bytes of the sample texts
	// Root is the RFC 6962 Merkle root (hex) over the leaves: the sorted
	// SHA-256 hashes of the sample texts (datasets.NewTree).
	Root string `json:"root"`
	// Leaves is the digest of the leaves file: the Samples leaves, 32
	// bytes each, in order.
	Leaves string  `json:"leaves"`
	Shards []Shard `json:"shards"`
}

// Validate checks the manifest's fields. Errors wrap ErrManifest (and
// spdx.ErrLicence for the licence) and name the field.
func (m *Manifest) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrManifest, field, fmt.Sprintf(format, args...))
	}
	if m.Version != Version {
		return bad("version", "%d, want %d", m.Version, Version)
	}
	if m.Name == "" || len(m.Name) > MaxNameLen || !nameRE.MatchString(m.Name) {
		return bad("name", "%q must be 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit", abbrev(m.Name), MaxNameLen)
	}
	if m.Format != FormatText && m.Format != FormatInstruct {
		return bad("format", "%q is not %s or %s", abbrev(m.Format), FormatText, FormatInstruct)
	}
	if len(m.Licence) > 256 {
		return bad("licence", "%d bytes, limit 256", len(m.Licence))
	}
	if err := spdx.Validate(m.Licence); err != nil {
		return fmt.Errorf("%w: licence: %w", ErrManifest, err)
	}
	if m.Card != "" && !digest.Valid(m.Card) {
		return bad("card", "%q is not a SHA-256 digest (64 lowercase hex)", abbrev(m.Card))
	}
	for _, f := range []struct{ name, v string }{{"owner", m.Owner}, {"root", m.Root}, {"leaves", m.Leaves}} {
		if !digest.Valid(f.v) {
			return bad(f.name, "%q is not 64 lowercase hex", abbrev(f.v))
		}
	}
	if m.Samples == 0 {
		return bad("samples", "must be at least 1")
	}
	if len(m.Shards) == 0 || len(m.Shards) > MaxShards {
		return bad("shards", "%d listed, want 1 to %d", len(m.Shards), MaxShards)
	}
	var next, total uint64
	for i, s := range m.Shards {
		if !digest.Valid(s.Digest) {
			return bad(fmt.Sprintf("shards[%d].digest", i), "%q is not a SHA-256 digest", abbrev(s.Digest))
		}
		if s.First != next {
			return bad(fmt.Sprintf("shards[%d].first", i), "%d, want %d: shards must cover the samples in order, without gaps or overlaps", s.First, next)
		}
		if s.Samples == 0 {
			return bad(fmt.Sprintf("shards[%d].samples", i), "must be at least 1")
		}
		if s.Samples > m.Samples-next {
			return bad(fmt.Sprintf("shards[%d].samples", i), "%d runs past the %d samples of the dataset", s.Samples, m.Samples)
		}
		if s.Bytes > ^uint64(0)-total {
			return bad(fmt.Sprintf("shards[%d].bytes", i), "overflows")
		}
		next += s.Samples
		total += s.Bytes
	}
	if next != m.Samples {
		return bad("shards", "cover %d samples, the manifest has %d", next, m.Samples)
	}
	if total != m.Bytes {
		return bad("shards", "hold %d bytes, the manifest says %d", total, m.Bytes)
	}
	return nil
}

// ShardOf returns the index of the shard that holds sample i.
func (m *Manifest) ShardOf(i uint64) int {
	lo, hi := 0, len(m.Shards)
	for lo < hi {
		mid := (lo + hi) / 2
		if m.Shards[mid].First+m.Shards[mid].Samples <= i {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// Signed is a decoded, signature-checked manifest and its envelope.
type Signed struct {
	Manifest
	// Envelope is the canonical envelope bytes; Digest their SHA-256 in
	// hex, the dataset's digest on the ledger.
	Envelope []byte
	Digest   string
}

// Sign validates m, checks that key is its owner's and returns the signed
// manifest.
func Sign(key ed25519.PrivateKey, m *Manifest) (*Signed, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("dspub: sign: private key is %d bytes", len(key))
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if id := dsse.KeyID(key.Public().(ed25519.PublicKey)); id != m.Owner {
		return nil, fmt.Errorf("dspub: sign: the key's ID %s is not the manifest's owner %s", id, m.Owner)
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("dspub: sign: %w", err)
	}
	env := dsse.Sign(key, PayloadType, payload).Encode()
	return &Signed{Manifest: *m, Envelope: env, Digest: digest.Bytes(env)}, nil
}

// Decode parses a signed manifest: a canonical DSSE envelope of type
// PayloadType with exactly one signature, whose key ID is the manifest's
// owner and which verifies with pub (nil skips the signature check: the
// caller then checks it with the owner's key from the ledger, as
// VerifySignature does), over the manifest's canonical JSON (strict:
// unknown or repeated fields, other field orders or whitespace are
// errors), with valid fields. Errors wrap ErrManifest.
func Decode(data []byte, pub ed25519.PublicKey) (*Signed, error) {
	var m Manifest
	env, err := dsse.DecodeSigned(data, PayloadType, MaxManifestBytes, &m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if env.Signatures[0].KeyID != m.Owner {
		return nil, fmt.Errorf("%w: signature keyid %q is not the owner %s", ErrManifest, abbrev(env.Signatures[0].KeyID), m.Owner)
	}
	if pub != nil {
		if err := env.Verify(pub); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrManifest, err)
		}
	}
	return &Signed{Manifest: m, Envelope: bytes.Clone(data), Digest: digest.Bytes(data)}, nil
}

// VerifySignature checks the manifest's signature with the owner's key.
func (s *Signed) VerifySignature(pub ed25519.PublicKey) error {
	if dsse.KeyID(pub) != s.Owner {
		return fmt.Errorf("%w: key %s is not the owner %s", ErrManifest, dsse.KeyID(pub), s.Owner)
	}
	env, err := dsse.Decode(s.Envelope)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if err := env.Verify(pub); err != nil {
		return fmt.Errorf("%w: %w", ErrManifest, err)
	}
	return nil
}

func abbrev(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
