package safetensors

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestOpenMappedMatchesOpen reads every tensor of a file through a mapping
// and through Open: raw bytes, float32 values, views and digest must agree,
// and evicting pages must not change what is read afterwards.
func TestOpenMappedMatchesOpen(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("memory-mapping is used on Linux only")
	}
	big := make([]float32, 5000) // more than a page
	for i := range big {
		big[i] = float32(i) * 0.25
	}
	bt, err := FromFloat32("big", F32, []int{50, 100}, big)
	if err != nil {
		t.Fatal(err)
	}
	// a.odd misaligns b.after; b.pad realigns what follows.
	odd := Tensor{Name: "a.odd", DType: I8, Shape: []int{3}, Data: []byte{1, 2, 3}}
	pad := Tensor{Name: "b.pad", DType: I8, Shape: []int{1}, Data: []byte{4}}
	after, err := FromFloat32("b.after", F32, []int{2}, []float32{1.5, -2})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "m.safetensors")
	if _, err := WriteFile(p, append(sample(t), bt, odd, pad, after), map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	want, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	got, err := OpenMapped(p)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Mapped() || want.Mapped() {
		t.Fatalf("Mapped: OpenMapped %v, Open %v", got.Mapped(), want.Mapped())
	}
	for _, ti := range want.Tensors() {
		raw, err := want.ReadRaw(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		view, ok := got.RawView(ti.Name)
		if !ok || !bytes.Equal(view, raw) {
			t.Errorf("%s: RawView differs from ReadRaw (ok %v)", ti.Name, ok)
		}
		if _, ok := want.RawView(ti.Name); ok {
			t.Errorf("%s: RawView of an unmapped file", ti.Name)
		}
		if !ti.DType.IsFloat() {
			continue
		}
		vals, err := want.Float32s(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		mvals, err := got.Float32s(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !sameBits(vals, mvals) {
			t.Errorf("%s: mapped Float32s differ from Open's", ti.Name)
		}
		fv, ok := got.Float32View(ti.Name)
		aligned := ti.DType == F32 && ti.Begin%4 == 0
		if aligned != (ti.Name == "big" || ti.Name == "model.b") {
			t.Fatalf("%s: layout is not the one this test means to build (begin %d)", ti.Name, ti.Begin)
		}
		if aligned {
			if !ok || !sameBits(fv, vals) {
				t.Errorf("%s: Float32View differs from Float32s (ok %v)", ti.Name, ok)
			}
		} else if ok {
			t.Errorf("%s (%s at %d): Float32View ok for data that is not aligned F32", ti.Name, ti.DType, ti.Begin)
		}
		got.Evict(ti.Name, 0, ti.NumBytes())
		got.Evict(ti.Name, 1, ti.NumBytes()) // out of range: ignored
		again, err := got.Float32s(ti.Name)
		if err != nil || !sameBits(again, vals) {
			t.Errorf("%s: values differ after Evict (%v)", ti.Name, err)
		}
	}
	d1, err := want.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := got.Digest()
	if err != nil || d1 != d2 {
		t.Errorf("mapped digest %s (%v), want %s", d2, err, d1)
	}
	if err := got.Close(); err != nil {
		t.Fatal(err)
	}
	if err := got.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenMappedErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.safetensors")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenMapped(empty); !errors.Is(err, ErrNotMapped) {
		t.Errorf("empty file: %v, want ErrNotMapped", err)
	}
	bad := filepath.Join(dir, "bad.safetensors")
	if err := os.WriteFile(bad, build(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenMapped(bad)
	if runtime.GOOS == "linux" && (!errors.Is(err, ErrFormat) || errors.Is(err, ErrNotMapped)) {
		t.Errorf("malformed file: %v, want a format error", err)
	}
	if _, err := OpenMapped(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestViews(t *testing.T) {
	x := []float32{1, -0.5, float32(math.Inf(1)), 3e-42}
	b, ok := Float32Bytes(x)
	if !ok {
		t.Skip("big-endian host")
	}
	enc, err := EncodeFloat32(F32, nil, x)
	if err != nil || !bytes.Equal(b, enc) {
		t.Fatalf("Float32Bytes %v, EncodeFloat32 %v (%v)", b, enc, err)
	}
	back, ok := AsFloat32(b)
	if !ok || !sameBits(back, x) {
		t.Fatalf("AsFloat32 %v (ok %v)", back, ok)
	}
	buf := make([]byte, 4*len(x)+1)
	copy(buf[1:], b)
	if _, ok := AsFloat32(buf[1:]); ok {
		t.Error("AsFloat32 accepted a misaligned slice")
	}
	if _, ok := AsFloat32(b[:5]); ok {
		t.Error("AsFloat32 accepted a length that is not a multiple of 4")
	}
	dec := make([]float32, len(x))
	if err := DecodeFloat32(F32, dec, buf[1:]); err != nil || !sameBits(dec, x) {
		t.Errorf("DecodeFloat32 from a misaligned buffer: %v (%v)", dec, err)
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
