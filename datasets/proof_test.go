package datasets

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Every sample of every shipped dataset proves included; texts not in it
// prove excluded; each proof survives an encode/decode round trip.
func TestProveShippedDatasets(t *testing.T) {
	for _, tc := range shipped {
		t.Run(tc.golden, func(t *testing.T) {
			sm, tree, d := signShipped(t, tc.path, tc.licence)
			root, size := sm.RootBytes(), sm.Samples
			for _, s := range d.Samples {
				p, err := tree.Prove(SampleDigest(s.Text))
				if err != nil {
					t.Fatal(err)
				}
				if !p.Included() {
					t.Fatalf("sample %s proves %s", s.ID, p.Kind)
				}
				q, err := DecodeProof(p.Encode())
				if err != nil {
					t.Fatal(err)
				}
				if err := q.Verify(root, size); err != nil {
					t.Fatalf("sample %s: %v", s.ID, err)
				}
			}
			for i := range 200 {
				text := fmt.Sprintf("a sample that is not in %s #%d", tc.path, i)
				p, err := tree.Prove(SampleDigest(text))
				if err != nil {
					t.Fatal(err)
				}
				if p.Included() {
					t.Fatalf("%q proves included", text)
				}
				q, err := DecodeProof(p.Encode())
				if err != nil {
					t.Fatal(err)
				}
				if err := q.Verify(root, size); err != nil {
					t.Fatalf("%q: %v", text, err)
				}
			}
		})
	}
}

// leavesOf builds a tree over n leaves with known values.
func leavesOf(n int) [][32]byte {
	out := make([][32]byte, n)
	for i := range out {
		out[i] = sha256.Sum256([]byte{byte(i), byte(i >> 8)})
	}
	return out
}

func hash32(b byte) [32]byte {
	var h [32]byte
	for i := range h {
		h[i] = b
	}
	return h
}

// Exclusion at the edges and on an empty tree, for tree sizes around
// powers of two.
func TestExclusionEdges(t *testing.T) {
	empty := NewTree(nil)
	p, err := empty.Prove(hash32(7))
	if err != nil || p.Kind != ProofExclusion || p.Left != nil || p.Right != nil {
		t.Fatalf("empty tree: %+v %v", p, err)
	}
	if err := p.Verify(empty.Root(), 0); err != nil {
		t.Fatal(err)
	}
	if er := empty.Root(); hex.EncodeToString(er[:]) != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatal("empty root is not SHA-256 of the empty string")
	}
	for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 16, 17} {
		tree := NewTree(leavesOf(n))
		for _, probe := range [][32]byte{hash32(0x00), hash32(0xff)} {
			p, err := tree.Prove(probe)
			if err != nil {
				t.Fatal(err)
			}
			if p.Included() || (p.Left == nil) == (p.Right == nil) {
				t.Fatalf("n=%d probe %x: %+v", n, probe[0], p)
			}
			if err := p.Verify(tree.Root(), tree.Size()); err != nil {
				t.Fatalf("n=%d probe %x: %v", n, probe[0], err)
			}
		}
		for i, l := range tree.Leaves() {
			p, _ := tree.Prove(l)
			if !p.Included() || p.Leaf.Index != uint64(i) {
				t.Fatalf("n=%d leaf %d: %+v", n, i, p)
			}
			if err := p.Verify(tree.Root(), tree.Size()); err != nil {
				t.Fatalf("n=%d leaf %d: %v", n, i, err)
			}
		}
	}
}

// Forged proofs fail, each with the reason named.
func TestForgedProofs(t *testing.T) {
	tree := NewTree(leavesOf(13))
	root, size := tree.Root(), tree.Size()
	member := tree.Leaves()[5]
	inc, _ := tree.Prove(member)
	var outsider [32]byte
	for i := 0; ; i++ {
		outsider = sha256.Sum256([]byte(fmt.Sprintf("outsider %d", i)))
		p, _ := tree.Prove(outsider)
		if p.Left != nil && p.Right != nil {
			break
		}
	}
	exc, _ := tree.Prove(outsider)
	clone := func(p *Proof) *Proof {
		q, err := DecodeProof(p.Encode())
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'a' {
			b[0] = 'b'
		} else {
			b[0] = 'a'
		}
		return string(b)
	}
	cases := []struct {
		name  string
		forge func() *Proof
		want  string
	}{
		{"inclusion claimed for an outsider", func() *Proof {
			p := clone(inc)
			p.Sample = hex.EncodeToString(outsider[:])
			return p
		}, "leaf.hash"},
		{"inclusion with a forged leaf", func() *Proof {
			p := clone(inc)
			p.Sample, p.Leaf.Hash = hex.EncodeToString(outsider[:]), hex.EncodeToString(outsider[:])
			return p
		}, "audit path does not lead to the root"},
		{"flipped path hash", func() *Proof { p := clone(inc); p.Leaf.Path[1] = flip(p.Leaf.Path[1]); return p }, "leaf (index 5"},
		{"wrong index", func() *Proof { p := clone(inc); p.Leaf.Index = 6; return p }, "audit path does not lead"},
		{"index outside tree", func() *Proof { p := clone(inc); p.Leaf.Index = 99; return p }, "outside a tree of 13"},
		{"wrong tree size", func() *Proof { p := clone(inc); p.TreeSize = 12; return p }, "tree_size 12"},
		{"wrong root", func() *Proof { p := clone(inc); p.Root = flip(p.Root); return p }, "is not the trusted root"},
		{"exclusion of a member", func() *Proof {
			p := clone(exc)
			p.Sample = hex.EncodeToString(member[:])
			return p
		}, "sort"},
		{"exclusion with non-adjacent leaves", func() *Proof {
			p := clone(exc)
			far, _ := tree.Prove(tree.Leaves()[(p.Right.Index+2)%13])
			p.Right = far.Leaf
			return p
		}, ""},
		{"exclusion missing a side", func() *Proof { p := clone(exc); p.Left = nil; return p }, "right alone must be the first leaf"},
		{"exclusion with no sides", func() *Proof { p := clone(exc); p.Left, p.Right = nil, nil; return p }, "needs a left or a right"},
		{"kind mixed", func() *Proof { p := clone(exc); p.Kind = ProofInclusion; return p }, "inclusion proof has a leaf"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.forge().Verify(root, size)
			if !errors.Is(err, ErrBadProof) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrBadProof containing %q", err, tc.want)
			}
		})
	}
}

func TestDecodeProofRejects(t *testing.T) {
	tree := NewTree(leavesOf(3))
	good := string(must(func() ([]byte, error) { p, err := tree.Prove(tree.Leaves()[0]); return p.Encode(), err }()))
	for _, tc := range []struct{ name, data, want string }{
		{"not json", "[", "JSON array"},
		{"unknown field", strings.Replace(good, `"version"`, `"extra":1,"version"`, 1), "unknown field"},
		{"bad version", strings.Replace(good, `"version": 1`, `"version": 9`, 1), "version 9"},
		{"bad kind", strings.Replace(good, `"inclusion"`, `"maybe"`, 1), `kind "maybe"`},
		{"short hash", strings.Replace(good, `"sample": "`, `"sample": "ab`, 1), "sample"},
		{"trailing", good + "{}", "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeProof([]byte(tc.data))
			if !errors.Is(err, ErrBadProof) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzDecodeProof(f *testing.F) {
	tree := NewTree(leavesOf(9))
	root, size := tree.Root(), tree.Size()
	for _, probe := range [][32]byte{tree.Leaves()[4], hash32(0), hash32(0x80), hash32(0xff)} {
		p, _ := tree.Prove(probe)
		f.Add(p.Encode())
	}
	f.Add([]byte(`{"version":1,"kind":"exclusion"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeProof(data)
		if err != nil {
			if !errors.Is(err, ErrBadProof) {
				t.Fatalf("error does not wrap ErrBadProof: %v", err)
			}
			return
		}
		// Verify must never panic, and a proof that verifies must agree
		// with the tree.
		if err := p.Verify(root, size); err == nil {
			got, _ := tree.Prove(mustHex32(p.Sample))
			if got.Kind != p.Kind {
				t.Fatalf("proof of %s verifies as %s, the tree says %s", p.Sample, p.Kind, got.Kind)
			}
		} else if !errors.Is(err, ErrBadProof) {
			t.Fatalf("Verify error does not wrap ErrBadProof: %v", err)
		}
	})
}
