package ledger

import (
	"errors"
	"fmt"
	"testing"
)

func TestInclusionProofs(t *testing.T) {
	for size := 1; size <= 33; size++ {
		txs := make([][]byte, size)
		for i := range txs {
			txs[i] = []byte(fmt.Sprintf("tx %d of %d", i, size))
		}
		root := TxRoot(txs)
		for i := range txs {
			proof, err := InclusionProof(txs, uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			h := TxHash(txs[i])
			if err := VerifyInclusion(h, uint64(i), uint64(size), proof, root); err != nil {
				t.Fatalf("size %d index %d: %v", size, i, err)
			}
			// Forgeries fail: another tx, another index, another root, a
			// flipped proof byte, a shortened proof.
			other := TxHash([]byte("forged"))
			if err := VerifyInclusion(other, uint64(i), uint64(size), proof, root); !errors.Is(err, ErrBadProof) {
				t.Fatalf("size %d index %d: forged tx verified", size, i)
			}
			if size > 1 {
				j := (i + 1) % size
				if err := VerifyInclusion(h, uint64(j), uint64(size), proof, root); !errors.Is(err, ErrBadProof) {
					t.Fatalf("size %d: wrong index verified", size)
				}
			}
			bad := root
			bad[0] ^= 1
			if err := VerifyInclusion(h, uint64(i), uint64(size), proof, bad); !errors.Is(err, ErrBadProof) {
				t.Fatal("wrong root verified")
			}
			if len(proof) > 0 {
				flipped := make([][]byte, len(proof))
				for k := range proof {
					flipped[k] = append([]byte(nil), proof[k]...)
				}
				flipped[len(flipped)-1][3] ^= 0x80
				if err := VerifyInclusion(h, uint64(i), uint64(size), flipped, root); !errors.Is(err, ErrBadProof) {
					t.Fatal("flipped proof verified")
				}
				if err := VerifyInclusion(h, uint64(i), uint64(size), proof[:len(proof)-1], root); !errors.Is(err, ErrBadProof) {
					t.Fatal("short proof verified")
				}
			}
		}
	}
	// One leaf: the root is the RFC 6962 leaf hash of the tx hash.
	h := TxHash([]byte("only"))
	if got, want := TxRoot([][]byte{[]byte("only")}), hasher.HashLeaf(h[:]); string(got[:]) != string(want) {
		t.Fatal("single-leaf root")
	}
	if _, err := InclusionProof(nil, 0); err == nil {
		t.Fatal("proof into empty tree")
	}
}
