package codec

import (
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var w Writer
	w.U8(7)
	w.U32(1 << 20)
	w.U64(1 << 40)
	w.I64(-3)
	w.F64(0.5)
	w.Hash([32]byte{1, 2, 3})
	w.Bytes([]byte("abc"))
	w.Str("chain")
	r := NewReader(w.B)
	if r.U8() != 7 || r.U32() != 1<<20 || r.U64() != 1<<40 || r.I64() != -3 || r.F64() != 0.5 ||
		r.Hash() != [32]byte{1, 2, 3} || string(r.Bytes(3)) != "abc" || r.Str(5) != "chain" {
		t.Fatal("values differ")
	}
	if err := r.Done(); err != nil {
		t.Fatal(err)
	}
}

func TestReaderRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		b    []byte
		read func(r *Reader)
	}{
		"short":               {[]byte{1, 2}, func(r *Reader) { r.U32() }},
		"non-minimal uvarint": {[]byte{0x80, 0x00}, func(r *Reader) { r.Uvarint() }},
		"over max":            {[]byte{4, 'a', 'b', 'c', 'd'}, func(r *Reader) { r.Str(3) }},
		"trailing":            {[]byte{1, 2}, func(r *Reader) { r.U8() }},
	} {
		r := NewReader(tc.b)
		tc.read(r)
		if err := r.Done(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	r := NewReader(nil)
	r.U8()
	if !errors.Is(r.Done(), ErrShort) {
		t.Errorf("empty input: %v, want ErrShort", r.Err())
	}
}
