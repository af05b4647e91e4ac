package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger/internal/codec"
)

// Encoding versions and tags. A block header starts with headerVersion; an
// encoded block with blockVersion; an encoded proposal (a raft log entry's
// data) with a type byte, on which FSM.Apply dispatches: LogTypeProposal
// for an unsigned proposal (the first format; raft refuses it now, see
// Proposal), LogTypeSignedProposal for one signed by its proposer.
const (
	headerVersion         byte = 1
	blockVersion          byte = 1
	LogTypeProposal       byte = 0x01 // raft log entry data: EncodeProposal of an unsigned Proposal
	LogTypeSignedProposal byte = 0x02 // raft log entry data: EncodeProposal of a signed Proposal
)

// MaxTxsPerBlock bounds the number of transactions a decoder accepts in one
// block or proposal, whatever the policy says.
const MaxTxsPerBlock = 100000

// ErrBadEncoding is wrapped by DecodeHeader, DecodeBlock and DecodeProposal.
var ErrBadEncoding = errors.New("ledger: bad encoding")

// Header is a block header. Hash() = SHA-256(EncodeHeader(h)).
type Header struct {
	Height    uint64
	PrevHash  [32]byte // hash of the block at Height-1; zero for genesis
	TxRoot    [32]byte // RFC 6962 Merkle tree hash over the tx hashes (TxRoot)
	StateHash [32]byte // SHA-256(previous state hash ‖ encoded write set)
	Time      int64    // unix nanoseconds; strictly increasing along the chain
	NumTxs    uint32   // number of txs: the Merkle tree size
	Proposer  string   // ID of the node that proposed the block; empty for genesis
}

// Block is a header and the envelopes of its transactions, in order.
type Block struct {
	Header Header
	Txs    [][]byte
}

// EncodeHeader returns the header's deterministic binary form:
//
//	version u8 (=1) ‖ height u64 ‖ prev_hash [32] ‖ tx_root [32] ‖
//	state_hash [32] ‖ time i64 ‖ num_txs u32 ‖ uvarint len(proposer) ‖ proposer
//
// with integers big-endian.
func EncodeHeader(h *Header) []byte {
	w := codec.Writer{B: make([]byte, 0, 1+8+32*3+8+4+1+len(h.Proposer))}
	w.U8(headerVersion)
	w.U64(h.Height)
	w.Hash(h.PrevHash)
	w.Hash(h.TxRoot)
	w.Hash(h.StateHash)
	w.I64(h.Time)
	w.U32(h.NumTxs)
	w.Str(h.Proposer)
	return w.B
}

// DecodeHeader parses EncodeHeader's output, rejecting any other byte string.
func DecodeHeader(b []byte) (*Header, error) {
	r := codec.NewReader(b)
	h, err := readHeader(r)
	if err == nil {
		err = r.Done()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadEncoding, err)
	}
	return h, nil
}

func readHeader(r *codec.Reader) (*Header, error) {
	if v := r.U8(); r.Err() == nil && v != headerVersion {
		return nil, fmt.Errorf("header version %d, want %d", v, headerVersion)
	}
	h := &Header{}
	h.Height = r.U64()
	h.PrevHash = r.Hash()
	h.TxRoot = r.Hash()
	h.StateHash = r.Hash()
	h.Time = r.I64()
	h.NumTxs = r.U32()
	h.Proposer = r.Str(64)
	if r.Err() != nil {
		return nil, r.Err()
	}
	if h.Proposer != "" && !digest.Valid(h.Proposer) {
		return nil, fmt.Errorf("proposer %q is not a node ID", h.Proposer)
	}
	return h, nil
}

// Hash returns the header's hash, SHA-256 of EncodeHeader(h).
func (h *Header) Hash() [32]byte { return sha256.Sum256(EncodeHeader(h)) }

// Hash returns the block's hash, which is its header's hash.
func (b *Block) Hash() [32]byte { return b.Header.Hash() }

// EncodeBlock returns the block's deterministic binary form:
//
//	version u8 (=1) ‖ EncodeHeader ‖ uvarint n ‖ n × (uvarint len ‖ envelope)
//
// where n must equal Header.NumTxs.
func EncodeBlock(b *Block) []byte {
	size := 1 + 128 + 10
	for _, tx := range b.Txs {
		size += len(tx) + 5
	}
	w := codec.Writer{B: make([]byte, 0, size)}
	w.U8(blockVersion)
	w.B = append(w.B, EncodeHeader(&b.Header)...)
	w.Uvarint(uint64(len(b.Txs)))
	for _, tx := range b.Txs {
		w.Bytes(tx)
	}
	return w.B
}

// DecodeBlock parses EncodeBlock's output, rejecting any other byte string.
// It checks the encoding only, not the hashes (see VerifyChain).
func DecodeBlock(data []byte) (*Block, error) {
	r := codec.NewReader(data)
	if v := r.U8(); r.Err() == nil && v != blockVersion {
		return nil, fmt.Errorf("%w: block version %d, want %d", ErrBadEncoding, v, blockVersion)
	}
	h, err := readHeader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: block header: %v", ErrBadEncoding, err)
	}
	n := r.Length(MaxTxsPerBlock)
	if r.Err() == nil && uint64(n) != uint64(h.NumTxs) {
		return nil, fmt.Errorf("%w: block has %d txs, header says %d", ErrBadEncoding, n, h.NumTxs)
	}
	b := &Block{Header: *h}
	if n > 0 {
		b.Txs = make([][]byte, n)
	}
	for i := 0; i < n && r.Err() == nil; i++ {
		b.Txs[i] = r.Bytes(MaxEnvelopeBytes)
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: block: %v", ErrBadEncoding, err)
	}
	return b, nil
}

// String describes the block in one line: height, hash prefix, txs, time.
func (b *Block) String() string {
	h := b.Hash()
	return fmt.Sprintf("block %d %s (%d txs, %s)", b.Header.Height, hex.EncodeToString(h[:6]), len(b.Txs),
		time.Unix(0, b.Header.Time).UTC().Format(time.RFC3339Nano))
}

// Proposal is one raft log entry: the transactions a leader batched, its ID
// and its clock when it proposed them, and (SignProposal) the proposer's
// signature over all of that and the chain ID. The FSM refuses a raft
// entry whose signature is missing or does not verify against the
// proposer's node key, so that a peer on the raft transport cannot name
// another node as proposer. Blocks do not keep the signature: a replay of
// committed blocks (VerifyChain, audit) goes through FSM.ApplyProposal,
// which checks a signature only when one is present.
type Proposal struct {
	Proposer string // node ID (KeyID of the node key)
	Time     int64  // unix nanoseconds, proposer's clock
	Txs      [][]byte
	// Key is the proposer's public key and Sig its ed25519 signature over
	// ProposalDigest; both nil in an unsigned proposal.
	Key ed25519.PublicKey
	Sig []byte
}

// proposalDomain separates proposal signatures from every other signature a
// node key makes (checkpoints, directory entries, TLS).
const proposalDomain = "fedtune/ledger/proposal/v1\x00"

// ProposalDigest returns what a proposer signs: SHA-256 of
//
//	"fedtune/ledger/proposal/v1" 0x00 ‖ uvarint len(chainID) ‖ chainID ‖
//	EncodeProposal of the proposal without Key and Sig
//
// so that a signature is valid for one chain and one proposal only.
func ProposalDigest(chainID string, p Proposal) [32]byte {
	p.Key, p.Sig = nil, nil
	var w codec.Writer
	w.B = append(w.B, proposalDomain...)
	w.Str(chainID)
	h := sha256.New()
	h.Write(w.B)
	h.Write(EncodeProposal(p))
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// SignProposal returns p proposed and signed by key on chain chainID: its
// Proposer, Key and Sig set.
func SignProposal(key ed25519.PrivateKey, chainID string, p Proposal) Proposal {
	pub := key.Public().(ed25519.PublicKey)
	p.Proposer, p.Key, p.Sig = KeyID(pub), nil, nil
	d := ProposalDigest(chainID, p)
	p.Key, p.Sig = pub, ed25519.Sign(key, d[:])
	return p
}

// VerifyProposal checks that p is signed, by the key whose ID is
// p.Proposer, for chain chainID, and returns that key.
func VerifyProposal(chainID string, p Proposal) (ed25519.PublicKey, error) {
	if p.Sig == nil {
		return nil, errors.New("the proposal is not signed (raft entries must be signed by their proposer)")
	}
	if KeyID(p.Key) != p.Proposer {
		return nil, fmt.Errorf("the proposal is signed by key %s, not by its proposer %s", abbrev(KeyID(p.Key)), abbrev(p.Proposer))
	}
	d := ProposalDigest(chainID, p)
	if !ed25519.Verify(p.Key, d[:], p.Sig) {
		return nil, fmt.Errorf("the proposal's signature by %s does not verify (another chain, or altered bytes)", abbrev(p.Proposer))
	}
	return p.Key, nil
}

// EncodeProposal returns the proposal's binary form, the data of a raft log
// entry. An unsigned proposal (Sig nil) is
//
//	LogTypeProposal u8 ‖ uvarint len(proposer) ‖ proposer ‖ time i64 ‖
//	uvarint n ‖ n × (uvarint len ‖ envelope)
//
// and a signed one is the same after LogTypeSignedProposal, followed by
// key [32] ‖ sig [64].
func EncodeProposal(p Proposal) []byte {
	size := 1 + 1 + len(p.Proposer) + 8 + 5 + len(p.Key) + len(p.Sig)
	for _, tx := range p.Txs {
		size += len(tx) + 5
	}
	w := codec.Writer{B: make([]byte, 0, size)}
	if p.Sig != nil {
		w.U8(LogTypeSignedProposal)
	} else {
		w.U8(LogTypeProposal)
	}
	w.Str(p.Proposer)
	w.I64(p.Time)
	w.Uvarint(uint64(len(p.Txs)))
	for _, tx := range p.Txs {
		w.Bytes(tx)
	}
	if p.Sig != nil {
		w.B = append(w.B, p.Key...)
		w.B = append(w.B, p.Sig...)
	}
	return w.B
}

// DecodeProposal parses EncodeProposal's output, rejecting any other byte
// string (a signed proposal's key must be 32 bytes and its signature 64).
// Transactions and the signature are not checked; the FSM does that.
func DecodeProposal(data []byte) (*Proposal, error) {
	r := codec.NewReader(data)
	v := r.U8()
	if r.Err() == nil && v != LogTypeProposal && v != LogTypeSignedProposal {
		return nil, fmt.Errorf("%w: log entry type %#x, want proposal %#x or %#x", ErrBadEncoding, v, LogTypeProposal, LogTypeSignedProposal)
	}
	p := &Proposal{}
	p.Proposer = r.Str(64)
	p.Time = r.I64()
	n := r.Length(MaxTxsPerBlock)
	if n > 0 {
		p.Txs = make([][]byte, n)
	}
	for i := 0; i < n && r.Err() == nil; i++ {
		p.Txs[i] = r.Bytes(MaxEnvelopeBytes)
	}
	if v == LogTypeSignedProposal && r.Err() == nil {
		p.Key = ed25519.PublicKey(bytes.Clone(r.Fixed(ed25519.PublicKeySize)))
		p.Sig = bytes.Clone(r.Fixed(ed25519.SignatureSize))
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("%w: proposal: %v", ErrBadEncoding, err)
	}
	if !digest.Valid(p.Proposer) {
		return nil, fmt.Errorf("%w: proposal: proposer %q is not a node ID", ErrBadEncoding, abbrev(p.Proposer))
	}
	return p, nil
}

// HeaderDiff names the first field (height, prev_hash, tx_root, state_hash,
// time, num_txs, proposer) in which two block headers differ, or "" if they
// are equal.
func HeaderDiff(got, want *Header) string {
	switch {
	case got.Height != want.Height:
		return "height"
	case got.PrevHash != want.PrevHash:
		return "prev_hash"
	case got.TxRoot != want.TxRoot:
		return "tx_root"
	case got.StateHash != want.StateHash:
		return "state_hash"
	case got.Time != want.Time:
		return "time"
	case got.NumTxs != want.NumTxs:
		return "num_txs"
	case got.Proposer != want.Proposer:
		return "proposer"
	}
	return ""
}
