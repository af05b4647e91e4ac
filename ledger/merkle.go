package ledger

import (
	"crypto"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// The leaves of a block's Merkle tree are the 32-byte tx hashes; leaf hash =
// SHA-256(0x00 ‖ tx hash), node hash = SHA-256(0x01 ‖ left ‖ right) (RFC
// 6962, as implemented by github.com/transparency-dev/merkle/rfc6962).
var hasher = rfc6962.New(crypto.SHA256)

// ErrBadProof is wrapped by VerifyInclusion when a proof does not lead to the
// root.
var ErrBadProof = errors.New("ledger: inclusion proof does not verify")

// merkleTree holds every perfect-subtree node hash of a tree over leaves.
type merkleTree struct {
	size  uint64
	nodes map[compact.NodeID][]byte
	root  [32]byte
}

func buildTree(txHashes [][32]byte) *merkleTree {
	t := &merkleTree{size: uint64(len(txHashes)), nodes: make(map[compact.NodeID][]byte, 2*len(txHashes))}
	if len(txHashes) == 0 {
		copy(t.root[:], hasher.EmptyRoot())
		return t
	}
	f := &compact.RangeFactory{Hash: hasher.HashChildren}
	r := f.NewEmptyRange(0)
	visit := func(id compact.NodeID, h []byte) { t.nodes[id] = h }
	for i := range txHashes {
		if err := r.Append(hasher.HashLeaf(txHashes[i][:]), visit); err != nil {
			panic("ledger: merkle append: " + err.Error()) // cannot fail for a range starting at 0
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		panic("ledger: merkle root: " + err.Error())
	}
	copy(t.root[:], root)
	return t
}

// inclusion returns the RFC 6962 audit path for leaf index.
func (t *merkleTree) inclusion(index uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, t.size)
	if err != nil {
		return nil, err
	}
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, ok := t.nodes[id]
		if !ok {
			return nil, fmt.Errorf("merkle node %+v missing", id)
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}

// TxRoot returns the RFC 6962 Merkle tree hash over the hashes of txs (the
// empty tree hashes to SHA-256 of the empty string).
func TxRoot(txs [][]byte) [32]byte {
	return buildTree(txHashes(txs)).root
}

func txHashes(txs [][]byte) [][32]byte {
	hs := make([][32]byte, len(txs))
	for i, tx := range txs {
		hs[i] = TxHash(tx)
	}
	return hs
}

// InclusionProof returns the audit path proving that txs[index] is in the
// tree whose root is TxRoot(txs).
func InclusionProof(txs [][]byte, index uint64) ([][]byte, error) {
	if index >= uint64(len(txs)) {
		return nil, fmt.Errorf("ledger: tx index %d out of range for %d txs", index, len(txs))
	}
	return buildTree(txHashes(txs)).inclusion(index)
}

// VerifyInclusion checks that the tx with hash txHash is leaf index of a tree
// of size leaves with the given root (a block header's TxRoot and NumTxs),
// using the audit path proof (TxRecord.Proof). It wraps ErrBadProof.
func VerifyInclusion(txHash [32]byte, index, size uint64, proofPath [][]byte, root [32]byte) error {
	if err := proof.VerifyInclusion(hasher, index, size, hasher.HashLeaf(txHash[:]), proofPath, root[:]); err != nil {
		return fmt.Errorf("%w: %v", ErrBadProof, err)
	}
	return nil
}
