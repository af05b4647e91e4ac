package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Encoding versions and tags. A block header starts with headerVersion; an
// encoded block with blockVersion; an encoded proposal (a raft log entry's
// data) with the type byte LogTypeProposal, on which FSM.Apply dispatches.
const (
	headerVersion   byte = 1
	blockVersion    byte = 1
	LogTypeProposal byte = 0x01 // raft log entry data: EncodeProposal
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
	w := writer{b: make([]byte, 0, 1+8+32*3+8+4+1+len(h.Proposer))}
	w.u8(headerVersion)
	w.u64(h.Height)
	w.hash(h.PrevHash)
	w.hash(h.TxRoot)
	w.hash(h.StateHash)
	w.i64(h.Time)
	w.u32(h.NumTxs)
	w.str(h.Proposer)
	return w.b
}

// DecodeHeader parses EncodeHeader's output, rejecting any other byte string.
func DecodeHeader(b []byte) (*Header, error) {
	r := reader{b: b}
	h, err := readHeader(&r)
	if err == nil {
		err = r.done()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadEncoding, err)
	}
	return h, nil
}

func readHeader(r *reader) (*Header, error) {
	if v := r.u8(); r.err == nil && v != headerVersion {
		return nil, fmt.Errorf("header version %d, want %d", v, headerVersion)
	}
	h := &Header{}
	h.Height = r.u64()
	h.PrevHash = r.hash()
	h.TxRoot = r.hash()
	h.StateHash = r.hash()
	h.Time = r.i64()
	h.NumTxs = r.u32()
	h.Proposer = r.str(64)
	if r.err != nil {
		return nil, r.err
	}
	if h.Proposer != "" && !validID(h.Proposer) {
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
	w := writer{b: make([]byte, 0, size)}
	w.u8(blockVersion)
	w.b = append(w.b, EncodeHeader(&b.Header)...)
	w.uvarint(uint64(len(b.Txs)))
	for _, tx := range b.Txs {
		w.bytes(tx)
	}
	return w.b
}

// DecodeBlock parses EncodeBlock's output, rejecting any other byte string.
// It checks the encoding only, not the hashes (see VerifyChain).
func DecodeBlock(data []byte) (*Block, error) {
	r := reader{b: data}
	if v := r.u8(); r.err == nil && v != blockVersion {
		return nil, fmt.Errorf("%w: block version %d, want %d", ErrBadEncoding, v, blockVersion)
	}
	h, err := readHeader(&r)
	if err != nil {
		return nil, fmt.Errorf("%w: block header: %v", ErrBadEncoding, err)
	}
	n := r.length(MaxTxsPerBlock)
	if r.err == nil && uint64(n) != uint64(h.NumTxs) {
		return nil, fmt.Errorf("%w: block has %d txs, header says %d", ErrBadEncoding, n, h.NumTxs)
	}
	b := &Block{Header: *h}
	if n > 0 {
		b.Txs = make([][]byte, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		b.Txs[i] = r.bytes(MaxEnvelopeBytes)
	}
	if err := r.done(); err != nil {
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
// and its clock when it proposed them.
type Proposal struct {
	Proposer string // node ID (KeyID of the node key)
	Time     int64  // unix nanoseconds, proposer's clock
	Txs      [][]byte
}

// EncodeProposal returns the proposal's binary form, the data of a raft log
// entry:
//
//	LogTypeProposal u8 ‖ uvarint len(proposer) ‖ proposer ‖ time i64 ‖
//	uvarint n ‖ n × (uvarint len ‖ envelope)
func EncodeProposal(p Proposal) []byte {
	size := 1 + 1 + len(p.Proposer) + 8 + 5
	for _, tx := range p.Txs {
		size += len(tx) + 5
	}
	w := writer{b: make([]byte, 0, size)}
	w.u8(LogTypeProposal)
	w.str(p.Proposer)
	w.i64(p.Time)
	w.uvarint(uint64(len(p.Txs)))
	for _, tx := range p.Txs {
		w.bytes(tx)
	}
	return w.b
}

// DecodeProposal parses EncodeProposal's output, rejecting any other byte
// string. Transactions inside are not checked; the FSM does that.
func DecodeProposal(data []byte) (*Proposal, error) {
	r := reader{b: data}
	if v := r.u8(); r.err == nil && v != LogTypeProposal {
		return nil, fmt.Errorf("%w: log entry type %#x, want proposal %#x", ErrBadEncoding, v, LogTypeProposal)
	}
	p := &Proposal{}
	p.Proposer = r.str(64)
	p.Time = r.i64()
	n := r.length(MaxTxsPerBlock)
	if n > 0 {
		p.Txs = make([][]byte, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		p.Txs[i] = r.bytes(MaxEnvelopeBytes)
	}
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("%w: proposal: %v", ErrBadEncoding, err)
	}
	if !validID(p.Proposer) {
		return nil, fmt.Errorf("%w: proposal: proposer %q is not a node ID", ErrBadEncoding, abbrev(p.Proposer))
	}
	return p, nil
}
