package safetensors

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"slices"
	"sort"
	"unicode/utf8"
	"unsafe"

	"github.com/fedtune/fedtune/internal/strictjson"
)

// MaxHeaderSize bounds the JSON header, as the reference implementation does.
const MaxHeaderSize = 100 << 20

// ErrFormat is wrapped by every error about malformed safetensors bytes.
var ErrFormat = errors.New("safetensors: malformed file")

// FormatError describes what is wrong with a file and where.
type FormatError struct {
	File   string // file name as given to Open or Parse
	Tensor string // tensor name, when the fault is in one tensor's entry
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("%s: tensor %q: %s", e.File, e.Tensor, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Unwrap makes errors.Is(err, ErrFormat) true.
func (e *FormatError) Unwrap() error { return ErrFormat }

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
	// Begin and End are byte offsets into the data buffer (after the header).
	Begin, End int64
}

// NumElements returns the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// NumBytes returns End-Begin.
func (t TensorInfo) NumBytes() int64 { return t.End - t.Begin }

// File is a parsed safetensors file whose data is read on demand.
type File struct {
	name     string
	r        io.ReaderAt
	closer   io.Closer
	dataOff  int64
	tensors  []TensorInfo // sorted by name
	index    map[string]int
	metadata map[string]string
	mapped   []byte // the whole file, when memory-mapped (OpenMapped)
}

// Open opens and validates the safetensors file at path.
func Open(path string) (*File, error) {
	return openWith(path, func(name string, fh *os.File, size int64) (*File, error) {
		f, err := Parse(name, fh, size)
		if err == nil {
			f.closer = fh
		}
		return f, err
	})
}

// openWith opens path and hands the open file and its size to parse; it
// closes the file where that fails.
func openWith(path string, parse func(name string, fh *os.File, size int64) (*File, error)) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	f, err := parse(path, fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, err
	}
	return f, nil
}

// Parse validates the header of the size bytes readable from r. name is
// used in error messages.
func Parse(name string, r io.ReaderAt, size int64) (*File, error) {
	ferr := func(tensor, format string, args ...any) error {
		return &FormatError{File: name, Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
	}
	if size < 8 {
		return nil, ferr("", "file is %d bytes, shorter than the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("%s: read header length: %w", name, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, ferr("", "header length %d exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, ferr("", "header length %d runs past the end of the %d-byte file (truncated?)", n, size)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("%s: read header: %w", name, err)
	}
	f := &File{name: name, r: r, dataOff: 8 + int64(n), index: map[string]int{}}
	if err := f.parseHeader(hdr, ferr); err != nil {
		return nil, err
	}
	if err := f.checkLayout(size-f.dataOff, ferr); err != nil {
		return nil, err
	}
	return f, nil
}

type rawEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func (f *File) parseHeader(hdr []byte, ferr func(string, string, ...any) error) error {
	trimmed := bytes.TrimRight(hdr, " ")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return ferr("", "header is not a JSON object")
	}
	if !utf8.Valid(trimmed) {
		return ferr("", "header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ferr("", "header is not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ferr("", "header JSON: %v", err)
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return ferr(key, "header JSON: %v", err)
		}
		if key == "__metadata__" {
			if f.metadata != nil {
				return ferr("", "duplicate __metadata__")
			}
			// Strictly: a key twice (or twice up to case) would let a
			// reader that keeps the first see another "fedtune.kind" than
			// one that keeps the last.
			f.metadata = map[string]string{}
			if err := strictjson.Unmarshal(raw, &f.metadata); err != nil {
				return ferr("", "__metadata__ must map strings to strings, each key once: %v", err)
			}
			continue
		}
		if _, dup := f.index[key]; dup {
			return ferr(key, "duplicate tensor name")
		}
		var e rawEntry
		if err := strictjson.Unmarshal(raw, &e); err != nil {
			return ferr(key, "bad entry: %v", err)
		}
		if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
			return ferr(key, "entry needs dtype, shape and data_offsets")
		}
		dt, err := ParseDType(*e.DType)
		if err != nil {
			return ferr(key, "%v", err)
		}
		ti := TensorInfo{Name: key, DType: dt, Shape: make([]int, len(*e.Shape))}
		numel := uint64(1)
		for i, s := range *e.Shape {
			if s < 0 || s > math.MaxInt32 {
				return ferr(key, "shape %v has an invalid dimension", *e.Shape)
			}
			ti.Shape[i] = int(s)
			hi, lo := bits.Mul64(numel, uint64(s))
			if hi != 0 || lo > math.MaxInt64/8 {
				return ferr(key, "shape %v is too large", *e.Shape)
			}
			numel = lo
		}
		if len(*e.DataOffsets) != 2 {
			return ferr(key, "data_offsets must be [begin, end]")
		}
		ti.Begin, ti.End = (*e.DataOffsets)[0], (*e.DataOffsets)[1]
		if ti.Begin < 0 || ti.End < ti.Begin {
			return ferr(key, "data_offsets [%d, %d] are invalid", ti.Begin, ti.End)
		}
		if want := int64(numel) * int64(dt.Size()); ti.End-ti.Begin != want {
			return ferr(key, "data_offsets [%d, %d] hold %d bytes, but %s%v needs %d",
				ti.Begin, ti.End, ti.End-ti.Begin, dt, ti.Shape, want)
		}
		f.index[key] = len(f.tensors)
		f.tensors = append(f.tensors, ti)
	}
	if _, err := dec.Token(); err != nil {
		return ferr("", "header JSON: %v", err)
	}
	if dec.More() {
		return ferr("", "trailing bytes after the header object")
	}
	sort.Slice(f.tensors, func(i, j int) bool { return f.tensors[i].Name < f.tensors[j].Name })
	for i, t := range f.tensors {
		f.index[t.Name] = i
	}
	return nil
}

// checkLayout requires the tensors to cover [0, dataLen) exactly.
func (f *File) checkLayout(dataLen int64, ferr func(string, string, ...any) error) error {
	byOff := make([]TensorInfo, len(f.tensors))
	copy(byOff, f.tensors)
	sort.SliceStable(byOff, func(i, j int) bool {
		if byOff[i].Begin != byOff[j].Begin {
			return byOff[i].Begin < byOff[j].Begin
		}
		return byOff[i].End < byOff[j].End
	})
	var pos int64
	for _, t := range byOff {
		if t.Begin < pos {
			return ferr(t.Name, "data_offsets [%d, %d] overlap the previous tensor (which ends at %d)", t.Begin, t.End, pos)
		}
		if t.Begin > pos {
			return ferr(t.Name, "gap in the data buffer: bytes [%d, %d) belong to no tensor", pos, t.Begin)
		}
		if t.End > dataLen {
			return ferr(t.Name, "data_offsets [%d, %d] run past the end of the %d-byte data buffer (truncated?)", t.Begin, t.End, dataLen)
		}
		pos = t.End
	}
	if pos != dataLen {
		return ferr("", "data buffer is %d bytes but tensors cover %d", dataLen, pos)
	}
	return nil
}

// Name returns the file name used in errors.
func (f *File) Name() string { return f.name }

// Tensors returns every tensor, sorted by name. The slice must not be modified.
func (f *File) Tensors() []TensorInfo { return f.tensors }

// Metadata returns the "__metadata__" map, or nil if there is none.
func (f *File) Metadata() map[string]string { return f.metadata }

// Info returns the tensor called name.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.tensors[i], true
}

func (f *File) lookup(name string) (TensorInfo, error) {
	t, ok := f.Info(name)
	if !ok {
		return t, &FormatError{File: f.name, Tensor: name, Msg: "no such tensor"}
	}
	return t, nil
}

// ReadRawAt reads len(dst) bytes of tensor name's data starting at byte off
// within the tensor.
func (f *File) ReadRawAt(name string, off int64, dst []byte) error {
	t, err := f.lookup(name)
	if err != nil {
		return err
	}
	if off < 0 || off+int64(len(dst)) > t.NumBytes() {
		return fmt.Errorf("%s: tensor %q: read [%d, %d) outside its %d bytes", f.name, name, off, off+int64(len(dst)), t.NumBytes())
	}
	if _, err := f.r.ReadAt(dst, f.dataOff+t.Begin+off); err != nil {
		return fmt.Errorf("%s: tensor %q: %w", f.name, name, err)
	}
	return nil
}

// ReadRaw returns a copy of tensor name's raw little-endian bytes.
func (f *File) ReadRaw(name string) ([]byte, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, t.NumBytes())
	return buf, f.ReadRawAt(name, 0, buf)
}

// ReadFloat32At fills dst with elements [elem, elem+len(dst)) of the float
// tensor name, converted to float32. scratch, if large enough, is used for the
// raw bytes so that repeated chunked reads do not allocate.
func (f *File) ReadFloat32At(name string, elem int64, dst []float32, scratch []byte) error {
	t, err := f.lookup(name)
	if err != nil {
		return err
	}
	if !t.DType.IsFloat() {
		return &FormatError{File: f.name, Tensor: name, Msg: fmt.Sprintf("dtype %s is not a float type", t.DType)}
	}
	sz := int64(t.DType.Size())
	need := int(int64(len(dst)) * sz)
	if cap(scratch) < need {
		scratch = make([]byte, need)
	}
	scratch = scratch[:need]
	if err := f.ReadRawAt(name, elem*sz, scratch); err != nil {
		return err
	}
	return DecodeFloat32(t.DType, dst, scratch)
}

// Float32s returns the whole float tensor name converted to float32.
func (f *File) Float32s(name string) ([]float32, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.NumElements())
	return out, f.ReadFloat32At(name, 0, out, nil)
}

// Digest returns the weight digest of the file's tensors: the lowercase hex
// SHA-256 of their canonical encoding, whatever this file's own layout.
func (f *File) Digest() (string, error) {
	h := sha256.New()
	if err := Copy(h, slices.Clone(f.tensors), f.ReadRawAt); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Close releases the file opened by Open. It is a no-op for Parse.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	return f.closer.Close()
}

// BF16s returns the BF16 tensor name as its raw bfloat16 values (each the
// top 16 bits of a float32), copied once from the file without widening:
// half the memory of Float32s. It is an error for a tensor of another dtype.
func (f *File) BF16s(name string) ([]uint16, error) {
	t, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	if t.DType != BF16 {
		return nil, &FormatError{File: f.name, Tensor: name, Msg: fmt.Sprintf("dtype %s, not BF16", t.DType)}
	}
	out := make([]uint16, t.NumElements())
	if len(out) == 0 {
		return out, nil
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(out))), 2*len(out))
	if err := f.ReadRawAt(name, 0, raw); err != nil {
		return nil, err
	}
	if !hostLittleEndian {
		for i := range out {
			out[i] = binary.LittleEndian.Uint16(raw[2*i:])
		}
	}
	return out, nil
}
