package safetensors

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/fedtune/fedtune/internal/atomicfile"
)

// Tensor is one tensor held in memory: its raw little-endian bytes.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// Info returns the tensor's description (offsets unset).
func (t Tensor) Info() TensorInfo { return TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape} }

// FromFloat32 builds a tensor of dtype d from float32 values.
func FromFloat32(name string, d DType, shape []int, vals []float32) (Tensor, error) {
	data, err := EncodeFloat32(d, make([]byte, 0, len(vals)*d.Size()), vals)
	if err != nil {
		return Tensor{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	t := Tensor{Name: name, DType: d, Shape: shape, Data: data}
	if int64(len(vals)) != t.Info().NumElements() {
		return Tensor{}, fmt.Errorf("tensor %q: %d values for shape %v", name, len(vals), shape)
	}
	return t, nil
}

// Writer streams a safetensors file: NewWriter writes the header, then the
// caller writes each tensor's bytes, in the order Tensors returns (sorted by
// name), through Write; Close checks that every byte arrived.
type Writer struct {
	w       io.Writer
	tensors []TensorInfo
	total   int64
	written int64
}

// CanonicalMetadata returns the "__metadata__" every canonical file carries:
// {"format":"pt"}, which transformers' from_pretrained requires of a
// safetensors checkpoint (it refuses a file with no metadata).
func CanonicalMetadata() map[string]string { return map[string]string{"format": "pt"} }

// NewWriter lays out specs in canonical order, writes the header to w and
// returns the Writer for the data. With meta == nil the output is canonical:
// its "__metadata__" is CanonicalMetadata. A non-nil meta is written as
// given.
func NewWriter(w io.Writer, specs []TensorInfo, meta map[string]string) (*Writer, error) {
	if meta == nil {
		meta = CanonicalMetadata()
	}
	ts := make([]TensorInfo, len(specs))
	copy(ts, specs)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	var off int64
	for i := range ts {
		t := &ts[i]
		if t.Name == "" || t.Name == "__metadata__" {
			return nil, fmt.Errorf("safetensors: invalid tensor name %q", t.Name)
		}
		if i > 0 && ts[i-1].Name == t.Name {
			return nil, fmt.Errorf("safetensors: duplicate tensor name %q", t.Name)
		}
		if t.DType.Size() == 0 {
			return nil, fmt.Errorf("safetensors: tensor %q: unknown dtype %q", t.Name, t.DType)
		}
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("safetensors: tensor %q: negative dimension in shape %v", t.Name, t.Shape)
			}
		}
		t.Begin = off
		t.End = off + t.NumElements()*int64(t.DType.Size())
		off = t.End
	}
	hdr := encodeHeader(ts, meta)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return nil, err
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	return &Writer{w: w, tensors: ts, total: off}, nil
}

func encodeHeader(ts []TensorInfo, meta map[string]string) []byte {
	var b bytes.Buffer
	str := func(s string) {
		var sb bytes.Buffer
		enc := json.NewEncoder(&sb)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s) // a string always encodes
		b.Write(bytes.TrimSuffix(sb.Bytes(), []byte("\n")))
	}
	b.WriteByte('{')
	first := true
	if meta != nil {
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString(`"__metadata__":{`)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			str(k)
			b.WriteByte(':')
			str(meta[k])
		}
		b.WriteByte('}')
		first = false
	}
	for _, t := range ts {
		if !first {
			b.WriteByte(',')
		}
		first = false
		str(t.Name)
		fmt.Fprintf(&b, `:{"dtype":"%s","shape":[`, t.DType)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d", d)
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, t.Begin, t.End)
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return b.Bytes()
}

// Tensors returns the layout in data order, with offsets filled in.
func (w *Writer) Tensors() []TensorInfo { return w.tensors }

// Write writes data bytes; it refuses more than the header announced.
func (w *Writer) Write(p []byte) (int, error) {
	if w.written+int64(len(p)) > w.total {
		return 0, fmt.Errorf("safetensors: %d data bytes written, header announced %d", w.written+int64(len(p)), w.total)
	}
	n, err := w.w.Write(p)
	w.written += int64(n)
	return n, err
}

// Close checks that all announced data was written. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.written != w.total {
		return fmt.Errorf("safetensors: %d data bytes written, header announced %d", w.written, w.total)
	}
	return nil
}

// Encode writes tensors to w (canonically, with CanonicalMetadata, when meta
// is nil).
func Encode(w io.Writer, tensors []Tensor, meta map[string]string) error {
	specs := make([]TensorInfo, len(tensors))
	byName := make(map[string][]byte, len(tensors))
	for i, t := range tensors {
		specs[i] = t.Info()
		if want := t.Info().NumElements() * int64(t.DType.Size()); int64(len(t.Data)) != want {
			return fmt.Errorf("safetensors: tensor %q: %d data bytes, %s%v needs %d", t.Name, len(t.Data), t.DType, t.Shape, want)
		}
		byName[t.Name] = t.Data
	}
	sw, err := NewWriter(w, specs, meta)
	if err != nil {
		return err
	}
	for _, t := range sw.Tensors() {
		if _, err := sw.Write(byName[t.Name]); err != nil {
			return err
		}
	}
	return sw.Close()
}

// Copy writes the canonical encoding of the tensors specs describes to w,
// reading each tensor's raw bytes (in the file's dtype, little-endian) a
// piece at a time with readRaw (as File.ReadRawAt does), so memory stays
// at one piece whatever the tensors' size.
func Copy(w io.Writer, specs []TensorInfo, readRaw func(name string, off int64, p []byte) error) error {
	sw, err := NewWriter(w, specs, nil)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, t := range sw.Tensors() {
		for off := int64(0); off < t.NumBytes(); {
			n := min(int64(len(buf)), t.NumBytes()-off)
			if err := readRaw(t.Name, off, buf[:n]); err != nil {
				return err
			}
			if _, err := sw.Write(buf[:n]); err != nil {
				return err
			}
			off += n
		}
	}
	return sw.Close()
}

// Digest returns the weight digest of tensors: the hex SHA-256 of their
// canonical encoding.
func Digest(tensors []Tensor) (string, error) {
	h := sha256.New()
	if err := Encode(h, tensors, nil); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// WriteFile writes tensors to path atomically (temporary file, fsync,
// rename): on error nothing is left at path. It returns the SHA-256 of the
// bytes written, which is the weight digest when meta is nil.
func WriteFile(path string, tensors []Tensor, meta map[string]string) (string, error) {
	return WriteFileFunc(path, func(w io.Writer) error { return Encode(w, tensors, meta) })
}

// WriteFileFunc writes whatever write produces to path atomically and
// returns the hex SHA-256 of those bytes. If write fails, nothing is left at
// path and any earlier file there is untouched.
func WriteFileFunc(path string, write func(io.Writer) error) (string, error) {
	h := sha256.New()
	if err := atomicfile.WriteFunc(path, 0o644, func(f *os.File) error { return write(io.MultiWriter(f, h)) }); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
