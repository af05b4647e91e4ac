package client

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/digest"
)

// Checkpoint errors.
var (
	// ErrBadCheckpoint is wrapped by every checkpoint that does not verify.
	ErrBadCheckpoint = errors.New("ledger node: bad checkpoint")
	// ErrNoFork is returned by VerifyFork for a pair that does not prove
	// a fork (same block hash, or different chains or heights).
	ErrNoFork = errors.New("ledger node: checkpoints do not conflict")
	// ErrQuorum is returned when fewer cosignatures than required could be
	// gathered.
	ErrQuorum = errors.New("ledger node: not enough cosignatures")
)

// checkpointDomain separates checkpoint signatures from every other use of a
// node key (DSSE tx signatures use PAE, which starts with "DSSEv1").
const checkpointDomain = "fedtune/ledger/checkpoint/v1\n"

// Checkpoint is one node's signed statement that the block at Height of
// chain ChainID has hash BlockHash.
type Checkpoint struct {
	ChainID   string
	Height    uint64
	BlockHash [32]byte
	NodeID    string
	PublicKey ed25519.PublicKey
	Signature []byte
}

// checkpointMessage returns the bytes a checkpoint signature covers:
// domain ‖ uint32 len(chainID) ‖ chainID ‖ uint64 height ‖ block hash,
// integers big-endian.
func checkpointMessage(chainID string, height uint64, hash [32]byte) []byte {
	b := make([]byte, 0, len(checkpointDomain)+4+len(chainID)+8+32)
	b = append(b, checkpointDomain...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(chainID)))
	b = append(b, chainID...)
	b = binary.BigEndian.AppendUint64(b, height)
	return append(b, hash[:]...)
}

// SignCheckpoint signs (chainID, height, hash) with key.
func SignCheckpoint(key ed25519.PrivateKey, chainID string, height uint64, hash [32]byte) Checkpoint {
	pub := key.Public().(ed25519.PublicKey)
	return Checkpoint{
		ChainID:   chainID,
		Height:    height,
		BlockHash: hash,
		NodeID:    nodeIDOf(pub),
		PublicKey: pub,
		Signature: ed25519.Sign(key, checkpointMessage(chainID, height, hash)),
	}
}

// nodeIDOf is the key ID of a raw public key.
func nodeIDOf(pub ed25519.PublicKey) string { return digest.Bytes(pub) }

// Verify checks that the signature is valid for the checkpoint's fields and
// that NodeID is the ID of PublicKey.
func (c *Checkpoint) Verify() error {
	if len(c.PublicKey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadCheckpoint, len(c.PublicKey), ed25519.PublicKeySize)
	}
	if id := nodeIDOf(c.PublicKey); id != c.NodeID {
		return fmt.Errorf("%w: node ID %q is not the ID %s of its public key", ErrBadCheckpoint, c.NodeID, id)
	}
	if !ed25519.Verify(c.PublicKey, checkpointMessage(c.ChainID, c.Height, c.BlockHash), c.Signature) {
		return fmt.Errorf("%w: signature of node %s at height %d does not verify", ErrBadCheckpoint, short(c.NodeID), c.Height)
	}
	return nil
}

// VerifyFor checks the checkpoint and that it is about the given block.
func (c *Checkpoint) VerifyFor(chainID string, height uint64, hash [32]byte) error {
	if c.ChainID != chainID || c.Height != height || c.BlockHash != hash {
		return fmt.Errorf("%w: node %s signed (%q, %d, %x), want (%q, %d, %x)", ErrBadCheckpoint,
			short(c.NodeID), c.ChainID, c.Height, c.BlockHash[:8], chainID, height, hash[:8])
	}
	return c.Verify()
}

// VerifyFork reports whether a and b together prove that the chain forked:
// both verify, both name the same chain and height, and their block hashes
// differ. It returns nil for such a proof, an error wrapping
// ErrBadCheckpoint when either checkpoint is forged or malformed, and one
// wrapping ErrNoFork when the two agree or are about different blocks.
func VerifyFork(a, b *Checkpoint) error {
	if err := a.Verify(); err != nil {
		return fmt.Errorf("first checkpoint: %w", err)
	}
	if err := b.Verify(); err != nil {
		return fmt.Errorf("second checkpoint: %w", err)
	}
	switch {
	case a.ChainID != b.ChainID:
		return fmt.Errorf("%w: chains %q and %q differ", ErrNoFork, a.ChainID, b.ChainID)
	case a.Height != b.Height:
		return fmt.Errorf("%w: heights %d and %d differ", ErrNoFork, a.Height, b.Height)
	case a.BlockHash == b.BlockHash:
		return fmt.Errorf("%w: both sign block %x at height %d", ErrNoFork, a.BlockHash[:8], a.Height)
	}
	return nil
}

// CheckpointToProto converts a checkpoint for the wire.
func CheckpointToProto(c *Checkpoint) *ledgerv1.Checkpoint {
	return &ledgerv1.Checkpoint{
		ChainId:   c.ChainID,
		Height:    c.Height,
		BlockHash: bytes.Clone(c.BlockHash[:]),
		NodeId:    c.NodeID,
		PublicKey: bytes.Clone(c.PublicKey),
		Signature: bytes.Clone(c.Signature),
	}
}

// CheckpointFromProto converts a wire checkpoint, checking field sizes (not
// the signature: call Verify).
func CheckpointFromProto(p *ledgerv1.Checkpoint) (*Checkpoint, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: missing", ErrBadCheckpoint)
	}
	if len(p.BlockHash) != 32 {
		return nil, fmt.Errorf("%w: block hash is %d bytes, want 32", ErrBadCheckpoint, len(p.BlockHash))
	}
	c := &Checkpoint{
		ChainID:   p.ChainId,
		Height:    p.Height,
		NodeID:    p.NodeId,
		PublicKey: ed25519.PublicKey(bytes.Clone(p.PublicKey)),
		Signature: bytes.Clone(p.Signature),
	}
	copy(c.BlockHash[:], p.BlockHash)
	return c, nil
}

// short abbreviates a node ID for messages.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
