package datasets

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/internal/safetext"
	"github.com/fedtune/fedtune/internal/spdx"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// ManifestPayloadType is the DSSE payloadType of a signed dataset manifest.
const ManifestPayloadType = "application/vnd.fedtune.dataset-manifest+json"

// ManifestVersion is the manifest format version this package writes.
const ManifestVersion = 1

// MaxManifestBytes bounds what DecodeManifest accepts.
const MaxManifestBytes = 64 << 10

// maxTextLen bounds the manifest's text fields, as the ledger bounds the
// DatasetRegistered fields they are copied into.
const maxTextLen = 1024

// Errors of the manifest functions, for errors.Is.
var (
	// ErrManifest is wrapped by DecodeManifest and Manifest.Validate for a
	// manifest that is malformed, badly signed or not canonical.
	ErrManifest = errors.New("datasets: bad manifest")
	// ErrRootMismatch is wrapped by VerifyManifest when the samples of a
	// dataset do not give the manifest's root, count or size.
	ErrRootMismatch = errors.New("datasets: manifest does not match the dataset")
	// ErrBadKey is returned by SignManifest for a key that is not an
	// ed25519 private key.
	ErrBadKey = errors.New("datasets: bad signing key")
	// ErrLicence is wrapped when a licence is not an SPDX expression this
	// package knows.
	ErrLicence = spdx.ErrLicence
)

// merkleHasher is RFC 6962 over SHA-256: leaf = SHA-256(0x00 ‖ sample
// hash), node = SHA-256(0x01 ‖ left ‖ right).
var merkleHasher = rfc6962.New(crypto.SHA256)

// Manifest describes a dataset without revealing it: how many samples, how
// many bytes, the RFC 6962 Merkle root over the sorted sample hashes, its
// licence and source, and who owns it. It is the signed payload of a DSSE
// envelope (SignManifest); the ledger's DatasetRegistered records the
// envelope's digest, with its root and counts.
//
// A sample's hash is the SHA-256 of the exact bytes the loader hands to the
// tokenizer, Sample.Text as UTF-8: a line without its line break (text
// files), the file's content without trailing line breaks (folders), the
// record's text field or prompt + "\n" + response (JSONL), each after the
// loader dropped a leading byte order mark. The leaves of the tree are those
// 32-byte hashes sorted bytewise (duplicates kept), so the root does not
// depend on the order of the samples and an exclusion proof is two adjacent
// leaves.
type Manifest struct {
	Version     int    `json:"version"`
	Name        string `json:"name"`
	Format      string `json:"format"` // the loader's layout: text, dir or jsonl
	Licence     string `json:"licence"`
	Source      string `json:"source"`
	Description string `json:"description,omitempty"`
	Owner       string `json:"owner"`   // the owner's member ID (ledger.KeyID)
	Samples     uint64 `json:"samples"` // number of leaves
	Bytes       uint64 `json:"bytes"`   // total bytes of the hashed sample texts
	Root        string `json:"root"`    // hex RFC 6962 root over the sorted sample hashes
}

// SignedManifest is a decoded, signature-checked manifest file.
//
// To record it on the ledger, its owner signs
// ledger.DatasetRegistered{Digest, Name, Licence, Source, Samples, Root,
// Bytes} with the manifest's fields (trainer.RegisterTx builds
// it); datasets does not import ledger, which sits above it in the package
// layering.
type SignedManifest struct {
	Manifest
	// Envelope is the file's canonical bytes; Digest is their SHA-256 in
	// hex, what DatasetRegistered.Digest records.
	Envelope []byte
	Digest   string
}

// SampleDigest returns the leaf value of a sample: SHA-256 of its text.
func SampleDigest(text string) [32]byte { return sha256.Sum256([]byte(text)) }

// SampleHashes returns the hashes of d's samples, sorted bytewise, and the
// total bytes hashed.
func SampleHashes(d *Dataset) ([][32]byte, uint64) {
	hs := make([][32]byte, len(d.Samples))
	var n uint64
	for i, s := range d.Samples {
		hs[i] = SampleDigest(s.Text)
		n += uint64(len(s.Text))
	}
	slices.SortFunc(hs, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	return hs, n
}

// Tree is an RFC 6962 Merkle tree over sorted sample hashes, with every
// node kept so that proofs are cheap.
type Tree struct {
	leaves [][32]byte
	nodes  map[compact.NodeID][]byte
	root   [32]byte
}

// NewTree builds the tree over sorted (it sorts a copy if they are not).
func NewTree(hashes [][32]byte) *Tree {
	leaves := slices.Clone(hashes)
	slices.SortFunc(leaves, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	t := &Tree{leaves: leaves, nodes: make(map[compact.NodeID][]byte, 2*len(leaves))}
	if len(leaves) == 0 {
		copy(t.root[:], merkleHasher.EmptyRoot())
		return t
	}
	f := &compact.RangeFactory{Hash: merkleHasher.HashChildren}
	r := f.NewEmptyRange(0)
	visit := func(id compact.NodeID, h []byte) { t.nodes[id] = h }
	for i := range leaves {
		if err := r.Append(merkleHasher.HashLeaf(leaves[i][:]), visit); err != nil {
			panic("datasets: merkle append: " + err.Error()) // cannot fail for a range from 0
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		panic("datasets: merkle root: " + err.Error())
	}
	copy(t.root[:], root)
	return t
}

// Root returns the tree's RFC 6962 root (SHA-256 of "" for no leaves).
func (t *Tree) Root() [32]byte { return t.root }

// Size returns the number of leaves.
func (t *Tree) Size() uint64 { return uint64(len(t.leaves)) }

// Leaves returns the sorted leaves (the sample hashes); do not modify.
func (t *Tree) Leaves() [][32]byte { return t.leaves }

// ValidateLicence checks that s is an SPDX licence expression of known
// IDs (spdx.Validate: internal/spdx's table and its rules). Errors wrap
// ErrLicence (spdx.ErrLicence) and name the offending term.
func ValidateLicence(s string) error { return spdx.Validate(s) }

// Validate checks the manifest's fields without its samples or signature.
// Errors wrap ErrManifest (or ErrLicence) and name the field.
func (m *Manifest) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrManifest, field, fmt.Sprintf(format, args...))
	}
	if m.Version != ManifestVersion {
		return bad("version", "%d, want %d", m.Version, ManifestVersion)
	}
	if m.Format != FormatText && m.Format != FormatDir && m.Format != FormatJSONL {
		return bad("format", "%q is not one of text, dir, jsonl", m.Format)
	}
	for _, f := range []struct{ name, v string }{{"name", m.Name}, {"source", m.Source}} {
		if f.v == "" {
			return bad(f.name, "is required")
		}
	}
	for _, f := range []struct{ name, v string }{{"name", m.Name}, {"source", m.Source}, {"description", m.Description}} {
		if len(f.v) > maxTextLen {
			return bad(f.name, "%d bytes, limit %d", len(f.v), maxTextLen)
		}
		if err := safetext.Check(f.v); err != nil {
			return bad(f.name, "%q: %v", truncate(f.v), err)
		}
	}
	if err := ValidateLicence(m.Licence); err != nil {
		return fmt.Errorf("%w: licence: %w", ErrManifest, err)
	}
	if !digest.Valid(m.Owner) {
		return bad("owner", "%q is not a member ID (64 lowercase hex)", m.Owner)
	}
	if !digest.Valid(m.Root) {
		return bad("root", "%q is not a SHA-256 hash (64 lowercase hex)", m.Root)
	}
	if m.Samples == 0 {
		return bad("samples", "must be at least 1")
	}
	return nil
}

// ManifestOptions are what BuildManifest cannot learn from the samples.
type ManifestOptions struct {
	Name        string // default: the dataset's name
	Format      string // the loader layout the dataset was read with
	Licence     string
	Source      string
	Description string
	Owner       string // member ID
}

// BuildManifest hashes d's samples and fills a manifest. It validates the
// result.
func BuildManifest(d *Dataset, o ManifestOptions) (*Manifest, *Tree, error) {
	hs, n := SampleHashes(d)
	t := NewTree(hs)
	name := o.Name
	if name == "" {
		name = d.Name
	}
	root := t.Root()
	m := &Manifest{Version: ManifestVersion, Name: name, Format: o.Format, Licence: o.Licence, Source: o.Source,
		Description: o.Description, Owner: o.Owner, Samples: t.Size(), Bytes: n, Root: hex.EncodeToString(root[:])}
	if err := m.Validate(); err != nil {
		return nil, nil, err
	}
	return m, t, nil
}

// SignManifest validates m, checks that key is its owner's and returns the
// signed manifest: a DSSE envelope over m's canonical JSON, in the
// envelope's canonical byte form (what a manifest file holds).
func SignManifest(key ed25519.PrivateKey, m *Manifest) (*SignedManifest, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sign manifest: %w", ErrBadKey)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if id := KeyID(key.Public().(ed25519.PublicKey)); id != m.Owner {
		return nil, fmt.Errorf("sign manifest: the key's ID %s is not the manifest's owner %s", id, m.Owner)
	}
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("sign manifest: %w", err)
	}
	env := dsse.Sign(key, ManifestPayloadType, payload).Encode()
	return &SignedManifest{Manifest: *m, Envelope: env, Digest: digest.Bytes(env)}, nil
}

// DecodeManifest parses a manifest file: a DSSE envelope in canonical form
// (ledger.DecodeEnvelope) of type ManifestPayloadType, one signature whose
// key ID is the manifest's owner and which verifies with pub (the owner's
// public key; nil skips the signature check, which the caller must then do
// with the ledger's member key), and a payload that is the manifest's
// canonical JSON (strict: unknown fields, other field orders or whitespace
// are errors), with valid fields. Errors wrap ErrManifest.
func DecodeManifest(data []byte, pub ed25519.PublicKey) (*SignedManifest, error) {
	var m Manifest
	env, err := dsse.DecodeSigned(data, ManifestPayloadType, MaxManifestBytes, &m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if env.Signatures[0].KeyID != m.Owner {
		return nil, fmt.Errorf("%w: signature keyid %q is not the owner %s", ErrManifest, truncate(env.Signatures[0].KeyID), m.Owner)
	}
	if pub != nil {
		if err := env.Verify(pub); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrManifest, err)
		}
	}
	return &SignedManifest{Manifest: m, Envelope: bytes.Clone(data), Digest: digest.Bytes(data)}, nil
}

// VerifySignature checks the manifest's signature with the owner's key.
func (s *SignedManifest) VerifySignature(pub ed25519.PublicKey) error {
	env, err := dsse.Decode(s.Envelope)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrManifest, err)
	}
	if err := env.Verify(pub); err != nil {
		return fmt.Errorf("%w: %w", ErrManifest, err)
	}
	return nil
}

// RootBytes returns the manifest's root as bytes (Validate checked it).
func (m *Manifest) RootBytes() [32]byte {
	var r [32]byte
	b, _ := hex.DecodeString(m.Root)
	copy(r[:], b)
	return r
}

// VerifyManifest recomputes the sample hashes of d and checks them against
// m: the root, the sample count and the byte count. A mismatch wraps
// ErrRootMismatch and says which.
func VerifyManifest(m *Manifest, d *Dataset) error {
	hs, n := SampleHashes(d)
	t := NewTree(hs)
	root := t.Root()
	got := hex.EncodeToString(root[:])
	switch {
	case got != m.Root:
		return fmt.Errorf("%w: root: the %d samples of %s give %s, the manifest says %s", ErrRootMismatch, t.Size(), d.Name, got, m.Root)
	case t.Size() != m.Samples:
		return fmt.Errorf("%w: samples: %s has %d, the manifest says %d", ErrRootMismatch, d.Name, t.Size(), m.Samples)
	case n != m.Bytes:
		return fmt.Errorf("%w: bytes: %s has %d, the manifest says %d", ErrRootMismatch, d.Name, n, m.Bytes)
	}
	return nil
}

// KeyID returns a member ID as the ledger defines it: the lowercase hex
// SHA-256 of the raw ed25519 public key.
func KeyID(pub ed25519.PublicKey) string { return dsse.KeyID(pub) }

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// DetectFormat returns the layout Load reads path with under opts: opts.Format
// if set, else dir for a folder, jsonl for .jsonl/.ndjson, text otherwise.
// It looks at the operating system's file system (opts.FS is ignored).
func DetectFormat(path string, opts Options) (string, error) {
	if opts.Format != FormatAuto {
		return opts.Format, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("datasets: %w", err)
	}
	switch {
	case st.IsDir():
		return FormatDir, nil
	case strings.HasSuffix(path, ".jsonl") || strings.HasSuffix(path, ".ndjson"):
		return FormatJSONL, nil
	}
	return FormatText, nil
}

// SampleFileText returns the text a sample file stands for, by the folder
// loader's rule: the file's bytes without a leading byte order mark and
// without trailing line breaks.
func SampleFileText(data []byte) string {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	return strings.TrimRight(string(data), "\r\n")
}
