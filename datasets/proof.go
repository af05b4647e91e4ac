package datasets

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/strictjson"
	"github.com/transparency-dev/merkle/proof"
)

// ProofVersion is the version of the proof JSON this package writes.
const ProofVersion = 1

// MaxProofBytes bounds what DecodeProof accepts.
const MaxProofBytes = 256 << 10

// The kinds of a Proof.
const (
	ProofInclusion = "inclusion"
	ProofExclusion = "exclusion"
)

// ErrBadProof is wrapped by DecodeProof and Proof.Verify when a proof is
// malformed or does not hold; the message says why.
var ErrBadProof = errors.New("datasets: proof does not verify")

// LeafProof is one leaf of the sorted tree and its RFC 6962 audit path.
type LeafProof struct {
	Index uint64   `json:"index"`
	Hash  string   `json:"hash"` // the leaf value: a sample hash, hex
	Path  []string `json:"path"` // sibling hashes, leaf to root, hex
}

// Proof says that a sample is (inclusion) or is not (exclusion) among the
// samples of a dataset whose manifest has root Root and TreeSize samples.
//
// An inclusion proof carries the sample's leaf. An exclusion proof carries
// the two adjacent leaves of the sorted tree that bracket the sample's hash
// (Left < Sample < Right, Right.Index = Left.Index+1), or only Right at
// index 0 when the hash sorts before every leaf, or only Left at index
// TreeSize-1 when it sorts after every leaf; an empty tree needs neither.
// Because the leaves are sorted, no leaf between two adjacent ones can equal
// the sample's hash.
type Proof struct {
	Version  int    `json:"version"`
	Kind     string `json:"kind"`
	Sample   string `json:"sample"` // SHA-256 of the sample's text, hex
	TreeSize uint64 `json:"tree_size"`
	Root     string `json:"root"` // the root the prover computed; check it against a trusted one
	// Manifest, when set, is the signed manifest file (its canonical
	// envelope bytes as a JSON string), so that a checker can tie Root to a
	// ledger digest.
	Manifest string     `json:"manifest,omitempty"`
	Leaf     *LeafProof `json:"leaf,omitempty"`
	Left     *LeafProof `json:"left,omitempty"`
	Right    *LeafProof `json:"right,omitempty"`
}

// Prove returns an inclusion proof for sample if its hash is a leaf of t,
// otherwise an exclusion proof.
func (t *Tree) Prove(sample [32]byte) (*Proof, error) {
	root := t.Root()
	p := &Proof{Version: ProofVersion, Sample: hex.EncodeToString(sample[:]), TreeSize: t.Size(), Root: hex.EncodeToString(root[:])}
	n := len(t.leaves)
	i := sort.Search(n, func(i int) bool { return bytes.Compare(t.leaves[i][:], sample[:]) >= 0 })
	if i < n && t.leaves[i] == sample {
		p.Kind = ProofInclusion
		lp, err := t.leafProof(uint64(i))
		if err != nil {
			return nil, err
		}
		p.Leaf = lp
		return p, nil
	}
	p.Kind = ProofExclusion
	var err error
	if i > 0 {
		if p.Left, err = t.leafProof(uint64(i - 1)); err != nil {
			return nil, err
		}
	}
	if i < n {
		if p.Right, err = t.leafProof(uint64(i)); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (t *Tree) leafProof(index uint64) (*LeafProof, error) {
	nodes, err := proof.Inclusion(index, t.Size())
	if err != nil {
		return nil, fmt.Errorf("datasets: proof for leaf %d: %w", index, err)
	}
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, ok := t.nodes[id]
		if !ok {
			return nil, fmt.Errorf("datasets: merkle node %+v missing", id)
		}
		hashes[i] = h
	}
	path, err := nodes.Rehash(hashes, merkleHasher.HashChildren)
	if err != nil {
		return nil, fmt.Errorf("datasets: proof for leaf %d: %w", index, err)
	}
	lp := &LeafProof{Index: index, Hash: hex.EncodeToString(t.leaves[index][:]), Path: make([]string, len(path))}
	for i, h := range path {
		lp.Path[i] = hex.EncodeToString(h)
	}
	return lp, nil
}

// Encode returns the proof as indented JSON with a final newline.
func (p *Proof) Encode() []byte {
	out, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		panic("datasets: encode proof: " + err.Error()) // only strings and numbers
	}
	return append(out, '\n')
}

// DecodeProof parses a proof strictly (unknown fields are errors) and
// checks its shape: version, kind, hex fields, which leaves are present.
// It does not check the hashes; Verify does. Errors wrap ErrBadProof.
func DecodeProof(data []byte) (*Proof, error) {
	if len(data) > MaxProofBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadProof, len(data), MaxProofBytes)
	}
	var p Proof
	if err := strictjson.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProof, err)
	}
	if err := p.checkShape(); err != nil {
		return nil, err
	}
	return &p, nil
}

func (p *Proof) checkShape() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadProof, fmt.Sprintf(format, args...))
	}
	if p.Version != ProofVersion {
		return bad("version %d, want %d", p.Version, ProofVersion)
	}
	if !digest.Valid(p.Sample) {
		return bad("sample %q is not a SHA-256 hash (64 lowercase hex)", truncate(p.Sample))
	}
	if !digest.Valid(p.Root) {
		return bad("root %q is not a SHA-256 hash (64 lowercase hex)", truncate(p.Root))
	}
	check := func(name string, l *LeafProof) error {
		if l == nil {
			return nil
		}
		if !digest.Valid(l.Hash) {
			return bad("%s.hash %q is not a SHA-256 hash", name, truncate(l.Hash))
		}
		if len(l.Path) > 64 {
			return bad("%s.path has %d hashes; no tree is that deep", name, len(l.Path))
		}
		for i, h := range l.Path {
			if !digest.Valid(h) {
				return bad("%s.path[%d] %q is not a SHA-256 hash", name, i, truncate(h))
			}
		}
		return nil
	}
	switch p.Kind {
	case ProofInclusion:
		if p.Leaf == nil || p.Left != nil || p.Right != nil {
			return bad("an inclusion proof has a leaf and no left or right")
		}
		return check("leaf", p.Leaf)
	case ProofExclusion:
		if p.Leaf != nil {
			return bad("an exclusion proof has no leaf, only left and/or right")
		}
		return firstErr(check("left", p.Left), check("right", p.Right))
	}
	return bad("kind %q is not inclusion or exclusion", truncate(p.Kind))
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Verify checks the proof against a trusted root and tree size (from a
// manifest whose signature and ledger digest the caller checked). It
// returns nil when the proof holds, else an error wrapping ErrBadProof that
// says precisely what failed.
func (p *Proof) Verify(root [32]byte, size uint64) error {
	if err := p.checkShape(); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadProof, fmt.Sprintf(format, args...))
	}
	if p.TreeSize != size {
		return bad("tree_size %d, the trusted manifest has %d samples", p.TreeSize, size)
	}
	if want := hex.EncodeToString(root[:]); p.Root != want {
		return bad("root %s is not the trusted root %s", p.Root, want)
	}
	sample := mustHex32(p.Sample)
	leaf := func(name string, l *LeafProof) error {
		if l.Index >= size {
			return bad("%s.index %d is outside a tree of %d leaves", name, l.Index, size)
		}
		path := make([][]byte, len(l.Path))
		for i, h := range l.Path {
			v := mustHex32(h)
			path[i] = v[:]
		}
		lh := mustHex32(l.Hash)
		if err := proof.VerifyInclusion(merkleHasher, l.Index, size, merkleHasher.HashLeaf(lh[:]), path, root[:]); err != nil {
			var rm proof.RootMismatchError
			if errors.As(err, &rm) {
				return bad("%s (index %d, hash %s…): audit path does not lead to the root: it gives %x", name, l.Index, l.Hash[:12], rm.CalculatedRoot)
			}
			return bad("%s (index %d, hash %s…): audit path does not lead to the root: %v", name, l.Index, l.Hash[:12], err)
		}
		return nil
	}
	if p.Kind == ProofInclusion {
		if p.Leaf.Hash != p.Sample {
			return bad("leaf.hash %s… is not the sample's hash %s…", p.Leaf.Hash[:12], p.Sample[:12])
		}
		return leaf("leaf", p.Leaf)
	}
	// Exclusion.
	switch {
	case size == 0:
		if p.Left != nil || p.Right != nil {
			return bad("an empty tree has no leaves to show")
		}
		return nil
	case p.Left == nil && p.Right == nil:
		return bad("exclusion from a tree of %d leaves needs a left or a right neighbour", size)
	}
	if p.Left != nil {
		if err := leaf("left", p.Left); err != nil {
			return err
		}
		if l := mustHex32(p.Left.Hash); bytes.Compare(l[:], sample[:]) >= 0 {
			return bad("left.hash %s… does not sort before the sample's hash %s…", p.Left.Hash[:12], p.Sample[:12])
		}
	}
	if p.Right != nil {
		if err := leaf("right", p.Right); err != nil {
			return err
		}
		if r := mustHex32(p.Right.Hash); bytes.Compare(r[:], sample[:]) <= 0 {
			return bad("right.hash %s… does not sort after the sample's hash %s…", p.Right.Hash[:12], p.Sample[:12])
		}
	}
	switch {
	case p.Left != nil && p.Right != nil && p.Right.Index != p.Left.Index+1:
		return bad("left (index %d) and right (index %d) are not adjacent leaves", p.Left.Index, p.Right.Index)
	case p.Left == nil && p.Right.Index != 0:
		return bad("right alone must be the first leaf (index 0), got index %d", p.Right.Index)
	case p.Right == nil && p.Left.Index != size-1:
		return bad("left alone must be the last leaf (index %d), got index %d", size-1, p.Left.Index)
	}
	return nil
}

func mustHex32(s string) [32]byte {
	var out [32]byte
	b, _ := hex.DecodeString(s)
	copy(out[:], b)
	return out
}

// Included reports whether the proof claims inclusion.
func (p *Proof) Included() bool { return p.Kind == ProofInclusion }
