// Package codec is the ledger's binary field codec: fixed-width
// big-endian integers, 32-byte hashes, and byte strings as a minimal
// uvarint length then the bytes. Blocks, proposals, the FSM's head and
// write sets and lineage links are written with it; each value has one
// encoding, and a Reader refuses any other.
//
//	var w codec.Writer
//	w.U64(height)
//	w.Str(chainID)
//	r := codec.NewReader(w.B)
//	h, id := r.U64(), r.Str(64)
//	err := r.Done() // the first error, or trailing bytes
package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrShort is wrapped by a Reader error when the input ends early.
var ErrShort = errors.New("unexpected end of data")

// Writer appends the fixed-width and length-prefixed fields of the ledger's
// binary encodings: integers big-endian, byte strings as uvarint length then
// bytes.
type Writer struct{ B []byte }

// U8, U32, U64, I64, F64 and Hash append fixed-width fields; Uvarint, Bytes
// and Str variable-length ones.
func (w *Writer) U8(v byte)       { w.B = append(w.B, v) }
func (w *Writer) U32(v uint32)    { w.B = binary.BigEndian.AppendUint32(w.B, v) }
func (w *Writer) U64(v uint64)    { w.B = binary.BigEndian.AppendUint64(w.B, v) }
func (w *Writer) I64(v int64)     { w.U64(uint64(v)) }
func (w *Writer) F64(v float64)   { w.U64(math.Float64bits(v)) }
func (w *Writer) Hash(h [32]byte) { w.B = append(w.B, h[:]...) }
func (w *Writer) Uvarint(v uint64) {
	w.B = binary.AppendUvarint(w.B, v)
}
func (w *Writer) Bytes(p []byte) {
	w.Uvarint(uint64(len(p)))
	w.B = append(w.B, p...)
}
func (w *Writer) Str(s string) {
	w.Uvarint(uint64(len(s)))
	w.B = append(w.B, s...)
}

// Reader consumes what Writer wrote. The first error sticks; later reads
// return zero values.
type Reader struct {
	b   []byte
	off int
	err error
}

// NewReader reads b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

func (r *Reader) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("at byte %d: %w", r.off, err)
	}
}

func (r *Reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail(ErrShort)
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

// Fixed reads n bytes as they are (nil after an error).
func (r *Reader) Fixed(n int) []byte { return r.take(n) }

// U8, U32, U64, I64, F64 and Hash read fixed-width fields.
func (r *Reader) U8() byte {
	p := r.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *Reader) U32() uint32 {
	p := r.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (r *Reader) U64() uint64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (r *Reader) I64() int64   { return int64(r.U64()) }
func (r *Reader) F64() float64 { return math.Float64frombits(r.U64()) }

func (r *Reader) Hash() (h [32]byte) {
	copy(h[:], r.take(32))
	return h
}

// Uvarint reads a minimally encoded uvarint.
func (r *Reader) Uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail(errors.New("bad uvarint"))
		return 0
	}
	// Reject non-minimal encodings so each value has one encoding.
	if n > 1 && r.b[r.off+n-1] == 0 {
		r.fail(errors.New("non-minimal uvarint"))
		return 0
	}
	r.off += n
	return v
}

// Length reads a uvarint length and checks it against the bytes left and max.
func (r *Reader) Length(max int) int {
	n := r.Uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(max) {
		r.fail(fmt.Errorf("length %d over limit %d", n, max))
		return 0
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail(ErrShort)
		return 0
	}
	return int(n)
}

// Bytes reads a byte string of at most max bytes (a copy).
func (r *Reader) Bytes(max int) []byte {
	n := r.Length(max)
	p := r.take(n)
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

// Str reads a string of at most max bytes.
func (r *Reader) Str(max int) string {
	n := r.Length(max)
	return string(r.take(n))
}

// Err returns the first error so far.
func (r *Reader) Err() error { return r.err }

// More reports whether bytes are left to read (and no error so far): how
// a decoder finds an optional trailing section an older writer left out.
func (r *Reader) More() bool { return r.err == nil && r.off < len(r.b) }

// Done returns the first error; it fails unless every byte was consumed.
func (r *Reader) Done() error {
	if r.err == nil && r.off != len(r.b) {
		r.fail(fmt.Errorf("%d trailing bytes", len(r.b)-r.off))
	}
	return r.err
}
