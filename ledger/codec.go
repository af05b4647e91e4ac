package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// errShort is returned by reader when the input ends early.
var errShort = errors.New("unexpected end of data")

// writer appends the fixed-width and length-prefixed fields of the ledger's
// binary encodings: integers big-endian, byte strings as uvarint length then
// bytes.
type writer struct{ b []byte }

func (w *writer) u8(v byte)       { w.b = append(w.b, v) }
func (w *writer) u32(v uint32)    { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) u64(v uint64)    { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *writer) i64(v int64)     { w.u64(uint64(v)) }
func (w *writer) f64(v float64)   { w.u64(math.Float64bits(v)) }
func (w *writer) hash(h [32]byte) { w.b = append(w.b, h[:]...) }
func (w *writer) uvarint(v uint64) {
	w.b = binary.AppendUvarint(w.b, v)
}
func (w *writer) bytes(p []byte) {
	w.uvarint(uint64(len(p)))
	w.b = append(w.b, p...)
}
func (w *writer) str(s string) {
	w.uvarint(uint64(len(s)))
	w.b = append(w.b, s...)
}

// reader consumes what writer wrote. The first error sticks; later reads
// return zero values.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("at byte %d: %w", r.off, err)
	}
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail(errShort)
		return nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}

func (r *reader) u8() byte {
	p := r.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *reader) u32() uint32 {
	p := r.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (r *reader) u64() uint64 {
	p := r.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (r *reader) i64() int64   { return int64(r.u64()) }
func (r *reader) f64() float64 { return math.Float64frombits(r.u64()) }

func (r *reader) hash() (h [32]byte) {
	copy(h[:], r.take(32))
	return h
}

func (r *reader) uvarint() uint64 {
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

// length reads a uvarint length and checks it against the bytes left and max.
func (r *reader) length(max int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(max) {
		r.fail(fmt.Errorf("length %d over limit %d", n, max))
		return 0
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail(errShort)
		return 0
	}
	return int(n)
}

func (r *reader) bytes(max int) []byte {
	n := r.length(max)
	p := r.take(n)
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

func (r *reader) str(max int) string {
	n := r.length(max)
	return string(r.take(n))
}

// done fails unless every byte was consumed.
func (r *reader) done() error {
	if r.err == nil && r.off != len(r.b) {
		r.fail(fmt.Errorf("%d trailing bytes", len(r.b)-r.off))
	}
	return r.err
}
