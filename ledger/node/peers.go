package node

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

// peerDomain separates directory-entry signatures from every other use of
// a node key.
const peerDomain = "fedtune/ledger/peer/v1\n"

// Peer directory errors (wrapped; test with errors.Is).
var (
	// ErrBadPeer is wrapped by a directory entry that is malformed or not
	// signed by the node it describes.
	ErrBadPeer = errors.New("ledger node: bad peer directory entry")
)

// peerEntry is one node's directory entry: its addresses, signed by the
// node itself. Seq orders one node's entries (its signing time in Unix
// nanoseconds; the highest wins). An entry with no signature is a hint
// (from this node's config file or a Join request): it is used only while
// no signed entry for that node is known, and never passed on.
type peerEntry struct {
	PeerConfig
	Seq       uint64 `json:"seq,omitempty"`
	PublicKey []byte `json:"public_key,omitempty"`
	Signature []byte `json:"signature,omitempty"`
}

// signed reports whether e carries a signature (verified or not).
func (e *peerEntry) signed() bool { return len(e.Signature) > 0 }

// peerMessage returns the bytes a directory entry's signature covers:
// domain ‖ for each of chain ID, node ID, raft address, gRPC address:
// uint32 length ‖ bytes ‖ then uint64 seq, integers big-endian.
func peerMessage(chainID string, p PeerConfig, seq uint64) []byte {
	b := make([]byte, 0, len(peerDomain)+16+len(chainID)+len(p.ID)+len(p.RaftAddress)+len(p.GRPCAddress)+8)
	b = append(b, peerDomain...)
	for _, f := range []string{chainID, p.ID, p.RaftAddress, p.GRPCAddress} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return binary.BigEndian.AppendUint64(b, seq)
}

// signPeer signs p (which must describe key's node) for chainID.
func signPeer(key ed25519.PrivateKey, chainID string, p PeerConfig, seq uint64) peerEntry {
	pub := key.Public().(ed25519.PublicKey)
	return peerEntry{PeerConfig: p, Seq: seq, PublicKey: bytes.Clone(pub), Signature: ed25519.Sign(key, peerMessage(chainID, p, seq))}
}

// maxPeerAddrLen bounds an address in a directory entry.
const maxPeerAddrLen = 256

// verify checks that e is well formed and signed, for chainID, by the key
// whose ID is e.ID.
func (e *peerEntry) verify(chainID string) error {
	switch {
	case !digest.Valid(e.ID):
		return fmt.Errorf("%w: node ID %q is not 64 lowercase hex characters", ErrBadPeer, e.ID)
	case e.GRPCAddress == "" || len(e.GRPCAddress) > maxPeerAddrLen || len(e.RaftAddress) > maxPeerAddrLen:
		return fmt.Errorf("%w: node %s: gRPC address %q / raft address %q (want a non-empty gRPC address, at most %d bytes each)", ErrBadPeer, short(e.ID), e.GRPCAddress, e.RaftAddress, maxPeerAddrLen)
	case !e.signed():
		return fmt.Errorf("%w: entry for node %s is not signed", ErrBadPeer, short(e.ID))
	case len(e.PublicKey) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: entry for node %s: public key is %d bytes, want %d", ErrBadPeer, short(e.ID), len(e.PublicKey), ed25519.PublicKeySize)
	}
	if id := ledger.KeyID(e.PublicKey); id != e.ID {
		return fmt.Errorf("%w: entry for node %s is signed by key %s, not by the node it describes", ErrBadPeer, short(e.ID), short(id))
	}
	if !ed25519.Verify(e.PublicKey, peerMessage(chainID, e.PeerConfig, e.Seq), e.Signature) {
		return fmt.Errorf("%w: entry for node %s (seq %d): signature does not verify for chain %q", ErrBadPeer, short(e.ID), e.Seq, chainID)
	}
	return nil
}

// peerDir maps node IDs to their raft and gRPC addresses. It is kept in
// memory and saved to peers.json in the data directory on every change.
// Only entries signed by the node they describe (and naming a ledger node)
// are taken from other nodes; see putSigned.
type peerDir struct {
	path    string
	chainID string
	isNode  func(id string) bool

	mu    sync.Mutex
	peers map[string]peerEntry
}

// loadPeerDir reads path if it exists, keeping the entries that still
// verify, and adds seeds (this node's configured peers) as hints.
func loadPeerDir(path, chainID string, isNode func(string) bool, seeds []PeerConfig) (*peerDir, error) {
	d := &peerDir{path: path, chainID: chainID, isNode: isNode, peers: map[string]peerEntry{}}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		var list []peerEntry
		if err := json.Unmarshal(data, &list); err != nil {
			return nil, fmt.Errorf("peer directory %s: %w", path, err)
		}
		for _, e := range list {
			if e.verify(chainID) == nil && isNode(e.ID) {
				d.peers[e.ID] = e
			}
		}
	case !os.IsNotExist(err):
		return nil, fmt.Errorf("peer directory: %w", err)
	}
	for _, p := range seeds {
		if old, ok := d.peers[p.ID]; !ok || !old.signed() {
			d.peers[p.ID] = peerEntry{PeerConfig: p}
		}
	}
	return d, d.save()
}

// get returns the entry for id.
func (d *peerDir) get(id string) (PeerConfig, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.peers[id]
	return p.PeerConfig, ok
}

// seq returns the seq of id's signed entry (0 when none is known).
func (d *peerDir) seq(id string) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.peers[id]; ok && e.signed() {
		return e.Seq
	}
	return 0
}

// putSigned verifies e (signed by the node it describes, for this chain,
// a ledger node) and stores it unless an entry with a seq at least as high
// is known. It returns an error wrapping ErrBadPeer for an entry that does
// not verify; the directory is then unchanged.
func (d *peerDir) putSigned(e peerEntry) error {
	if err := e.verify(d.chainID); err != nil {
		return err
	}
	if !d.isNode(e.ID) {
		return fmt.Errorf("%w: node %s: %w", ErrBadPeer, short(e.ID), errNotNode)
	}
	d.mu.Lock()
	old, ok := d.peers[e.ID]
	if ok && old.signed() && old.Seq >= e.Seq {
		d.mu.Unlock()
		return nil
	}
	d.peers[e.ID] = e
	d.mu.Unlock()
	return d.save()
}

// putSelf stores this node's own entry, signed by the node (no ledger-node
// check: a node may start before it is one).
func (d *peerDir) putSelf(e peerEntry) error {
	if err := e.verify(d.chainID); err != nil {
		return err
	}
	d.mu.Lock()
	d.peers[e.ID] = e
	d.mu.Unlock()
	return d.save()
}

// putHint stores an unsigned entry for p.ID when none is known.
func (d *peerDir) putHint(p PeerConfig) error {
	if p.ID == "" || p.GRPCAddress == "" {
		return nil
	}
	d.mu.Lock()
	if _, ok := d.peers[p.ID]; ok {
		d.mu.Unlock()
		return nil
	}
	d.peers[p.ID] = peerEntry{PeerConfig: p}
	d.mu.Unlock()
	return d.save()
}

// list returns all entries sorted by ID.
func (d *peerDir) list() []peerEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]peerEntry, 0, len(d.peers))
	for _, p := range d.peers {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// save writes the directory atomically (temp file, fsync, rename).
func (d *peerDir) save() error {
	data, err := json.MarshalIndent(d.list(), "", "  ")
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return atomicfile.Write(d.path, data, 0o644)
}

func peerToProto(e peerEntry, suffrage string) *ledgerv1.Peer {
	return &ledgerv1.Peer{NodeId: e.ID, RaftAddress: e.RaftAddress, GrpcAddress: e.GRPCAddress, Suffrage: suffrage,
		Seq: e.Seq, PublicKey: bytes.Clone(e.PublicKey), Signature: bytes.Clone(e.Signature)}
}

func peerFromProto(p *ledgerv1.Peer) peerEntry {
	if p == nil {
		return peerEntry{}
	}
	return peerEntry{PeerConfig: PeerConfig{ID: p.NodeId, RaftAddress: p.RaftAddress, GRPCAddress: p.GrpcAddress},
		Seq: p.Seq, PublicKey: bytes.Clone(p.PublicKey), Signature: bytes.Clone(p.Signature)}
}
