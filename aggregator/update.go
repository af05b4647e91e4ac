package aggregator

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
)

// abbrevMeta cuts a metadata value for an error message.
func abbrevMeta(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// Metadata keys and values an update file may carry in its "__metadata__".
const (
	// MetaKind says what the tensors hold: KindFull (the default) or
	// KindDelta. It is model.MetaUpdateKind: model.Load refuses a delta.
	MetaKind = "fedtune.kind"
	// MetaQuant names the quantization of I8 tensors; only QuantInt8 is defined.
	MetaQuant = "fedtune.quant"
	// MetaBlock is the number of elements that share one scale (a decimal integer).
	MetaBlock = "fedtune.block"
	// MetaNumSamples is the number of training samples behind the update
	// (a positive decimal number), its weight in FedAvg-style strategies.
	MetaNumSamples = "num_samples"
	// MetaBase is the weight digest of the global model the update was
	// trained from (64 lowercase hex); optional. An aggregation told its
	// base's digest (Request.BaseDigest) rejects an update naming another.
	MetaBase = "fedtune.base"

	// KindFull marks full weights (of the model or of a LoRA adapter).
	KindFull = "full"
	// KindDelta marks a difference to the base: the update is base + tensors.
	KindDelta = "delta"
	// QuantInt8 marks symmetric int8 quantization with per-block F32 scales.
	QuantInt8 = "int8"
	// ScalesSuffix is appended to an I8 tensor's name to name its scales.
	ScalesSuffix = ".__scales__"

	// MaxQuantBlock bounds fedtune.block.
	MaxQuantBlock = 1 << 24
)

// ErrInvalidUpdate is wrapped by every error about a malformed or
// unacceptable update: bad encoding, a layout that does not match the
// reference, a non-finite value, a norm over the bound.
var ErrInvalidUpdate = errors.New("aggregator: invalid update")

// UpdateError says what is wrong with an update and where.
type UpdateError struct {
	File   string // the update's path (or name given to ParseUpdate)
	Tensor string // the tensor at fault, if one is
	Msg    string
	Err    error // an underlying error (a safetensors.FormatError, an I/O error), or nil
	quiet  bool  // Err's text is already in Msg
}

func (e *UpdateError) Error() string {
	s := e.File
	if e.Tensor != "" {
		s += fmt.Sprintf(": tensor %q", e.Tensor)
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil && !e.quiet {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrInvalidUpdate and the underlying error.
func (e *UpdateError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalidUpdate, e.Err}
	}
	return []error{ErrInvalidUpdate}
}

// Update is an opened update file. Its logical tensors (Tensors) decode to
// float32 whatever their encoding: F32, F16, BF16 or F64 as stored, or I8
// with per-block scales (tensor X stored as I8 beside "X.__scales__", F32 of
// shape [ceil(numel/block)], and "__metadata__" {"fedtune.quant":"int8",
// "fedtune.block":"B"}): element i of X is float32(q[i]) * scales[i/B].
type Update struct {
	f       *safetensors.File
	kind    string
	block   int
	tensors []safetensors.TensorInfo // logical, sorted by name; DType as stored
	index   map[string]int
	samples float64
	base    string // MetaBase, "" when absent
	closer  io.Closer
	mark    evictMark // see consumed; passes over an Update run on one goroutine at a time
}

// OpenUpdate opens and validates the update file at path.
func OpenUpdate(path string) (*Update, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, &UpdateError{File: path, Msg: "open", Err: err}
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, &UpdateError{File: path, Msg: "stat", Err: err}
	}
	// Map the file where possible, so that passes over it read the page
	// cache directly; otherwise read it through fh.
	f, err := mapFile(path, fh, st.Size())
	if errors.Is(err, safetensors.ErrNotMapped) {
		u, err := ParseUpdate(path, fh, st.Size())
		if err != nil {
			fh.Close()
			return nil, err
		}
		u.closer = fh
		return u, nil
	}
	if err != nil {
		fh.Close()
		return nil, parseError(path, err)
	}
	u, err := newUpdate(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	u.closer = f
	return u, nil
}

// mapInputs turns memory-mapping on; tests turn it off to check that the
// read-through path gives the same results.
var mapInputs = true

func mapFile(path string, fh *os.File, size int64) (*safetensors.File, error) {
	if !mapInputs {
		return nil, safetensors.ErrNotMapped
	}
	return safetensors.MapFile(path, fh, size)
}

// openMapped opens a safetensors file mapped where possible (see
// safetensors.OpenMapped), else read on demand.
func openMapped(path string) (*safetensors.File, error) {
	if !mapInputs {
		return safetensors.Open(path)
	}
	f, err := safetensors.OpenMapped(path)
	if errors.Is(err, safetensors.ErrNotMapped) {
		return safetensors.Open(path)
	}
	return f, err
}

func parseError(name string, err error) error {
	var fe *safetensors.FormatError
	if errors.As(err, &fe) {
		return &UpdateError{File: name, Tensor: fe.Tensor, Msg: fe.Msg, Err: err, quiet: true}
	}
	return &UpdateError{File: name, Err: err}
}

// inspectEvictSpan is how many bytes of a mapped input the inspection pass
// hashes before it drops them from the process's resident set: large
// enough that the system calls (and the TLB shootdowns they cause) cost
// little, and only Options.Threads inputs are inspected at a time. The
// streaming passes, which hold every input at once, drop each chunk.
const inspectEvictSpan = 2 << 20

// evictMark is how far a pass has dropped one stored tensor's pages.
type evictMark struct {
	name string
	from int64 // bytes
}

// consumed tells u that a pass has read stored tensor name up to byte
// end: once span bytes (or the tensor's end) have been read since the
// last drop, they leave the resident set when the file is mapped
// (they stay in the page cache). Passes read each tensor in order, from
// the start; reading an earlier part again starts a new pass.
func (u *Update) consumed(name string, end, span int64) {
	if !u.f.Mapped() {
		return
	}
	t, ok := u.f.Info(name)
	if !ok {
		return
	}
	if name != u.mark.name || end <= u.mark.from {
		u.mark = evictMark{name: name}
	}
	if end-u.mark.from >= span || end == t.NumBytes() {
		u.f.Evict(name, u.mark.from, end-u.mark.from)
		u.mark.from = end
	}
}

// evict records that a streaming pass has read elements [elem, elem+m)
// of logical tensor name, and drops them (see consumed).
func (u *Update) evict(name string, elem int64, m int) {
	t, ok := u.Info(name)
	if !ok {
		return
	}
	u.consumed(name, (elem+int64(m))*int64(t.DType.Size()), 0)
}

// ParseUpdate validates the update held in the size bytes readable from r.
// name is used in errors.
func ParseUpdate(name string, r io.ReaderAt, size int64) (*Update, error) {
	f, err := safetensors.Parse(name, r, size)
	if err != nil {
		return nil, parseError(name, err)
	}
	return newUpdate(f)
}

func newUpdate(f *safetensors.File) (*Update, error) {
	name := f.Name()
	bad := func(tensor, format string, args ...any) error {
		return &UpdateError{File: name, Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
	}
	meta := f.Metadata()
	u := &Update{f: f, kind: KindFull, index: map[string]int{}}
	switch k := meta[MetaKind]; k {
	case "", KindFull:
	case KindDelta:
		u.kind = KindDelta
	default:
		return nil, bad("", "__metadata__ %s is %q, want %q or %q", MetaKind, k, KindFull, KindDelta)
	}
	if s, ok := meta[MetaNumSamples]; ok {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(v > 0) || math.IsInf(v, 0) {
			return nil, bad("", "__metadata__ %s is %q, want a positive number", MetaNumSamples, s)
		}
		u.samples = v
	}
	if b, ok := meta[MetaBase]; ok {
		if !digest.Valid(b) {
			return nil, bad("", "__metadata__ %s is %q, want a weight digest (64 lowercase hex)", MetaBase, abbrevMeta(b))
		}
		u.base = b
	}
	switch q := meta[MetaQuant]; q {
	case "":
		if _, ok := meta[MetaBlock]; ok {
			return nil, bad("", "__metadata__ has %s without %s", MetaBlock, MetaQuant)
		}
	case QuantInt8:
		b, err := strconv.Atoi(meta[MetaBlock])
		if err != nil || b <= 0 || b > MaxQuantBlock {
			return nil, bad("", "__metadata__ %s is %q, want an integer in [1, %d]", MetaBlock, meta[MetaBlock], MaxQuantBlock)
		}
		u.block = b
	default:
		return nil, bad("", "__metadata__ %s is %q; only %q is defined", MetaQuant, q, QuantInt8)
	}
	for _, t := range f.Tensors() {
		if u.block > 0 && strings.HasSuffix(t.Name, ScalesSuffix) {
			owner := strings.TrimSuffix(t.Name, ScalesSuffix)
			if ot, ok := f.Info(owner); !ok || ot.DType != safetensors.I8 {
				return nil, bad(t.Name, "scales tensor without an I8 tensor %q", owner)
			}
			continue
		}
		switch {
		case t.DType.IsFloat():
		case t.DType == safetensors.I8 && u.block > 0:
			st, ok := f.Info(t.Name + ScalesSuffix)
			if !ok {
				return nil, bad(t.Name, "I8 tensor has no %q tensor", t.Name+ScalesSuffix)
			}
			nb := (t.NumElements() + int64(u.block) - 1) / int64(u.block)
			if st.DType != safetensors.F32 || len(st.Shape) != 1 || int64(st.Shape[0]) != nb {
				return nil, bad(st.Name, "scales are %s%v, want F32[%d] (ceil(%d/%d))", st.DType, st.Shape, nb, t.NumElements(), u.block)
			}
		case t.DType == safetensors.I8:
			return nil, bad(t.Name, "dtype I8 needs __metadata__ %s=%q and %s", MetaQuant, QuantInt8, MetaBlock)
		default:
			return nil, bad(t.Name, "dtype %s is not an update encoding (F32, F16, BF16, F64, or I8 with scales)", t.DType)
		}
		u.index[t.Name] = len(u.tensors)
		u.tensors = append(u.tensors, t)
	}
	return u, nil
}

// Name returns the update's file name as used in errors.
func (u *Update) Name() string { return u.f.Name() }

// Kind returns KindFull or KindDelta.
func (u *Update) Kind() string { return u.kind }

// Base returns the weight digest of the model the update says it was
// trained from (__metadata__ fedtune.base), or "" when it says none.
func (u *Update) Base() string { return u.base }

// Block returns the int8 block size, or 0 when no tensor is quantized.
func (u *Update) Block() int { return u.block }

// NumSamples returns the "num_samples" metadata value, if present.
func (u *Update) NumSamples() (float64, bool) { return u.samples, u.samples > 0 }

// Tensors returns the logical tensors, sorted by name (scales tensors are
// not listed). DType is the stored encoding. The slice must not be modified.
func (u *Update) Tensors() []safetensors.TensorInfo { return u.tensors }

// Info returns the logical tensor called name.
func (u *Update) Info(name string) (safetensors.TensorInfo, bool) {
	i, ok := u.index[name]
	if !ok {
		return safetensors.TensorInfo{}, false
	}
	return u.tensors[i], true
}

// Digest returns the weight digest of the file's stored tensors (scales
// included), which names the update in the ledger.
func (u *Update) Digest() (string, error) {
	d, err := u.f.Digest()
	if err != nil {
		return "", &UpdateError{File: u.Name(), Msg: "digest", Err: err}
	}
	return d, nil
}

// Close closes the file opened by OpenUpdate.
func (u *Update) Close() error {
	if u.closer == nil {
		return nil
	}
	c := u.closer
	u.closer = nil
	return c.Close()
}

// Decoder reads chunks of update tensors as float32. It holds the scratch
// buffers one goroutine needs; it is not safe for concurrent use.
type Decoder struct {
	be     kernels.Backend
	raw    []byte
	q      []int8
	scales []float32
}

// NewDecoder returns a Decoder that dequantizes with be (nil: kernels.Default()).
func NewDecoder(be kernels.Backend) *Decoder {
	if be == nil {
		be = kernels.Default()
	}
	return &Decoder{be: be}
}

// Read fills dst with elements [elem, elem+len(dst)) of u's logical tensor name.
func (d *Decoder) Read(u *Update, name string, elem int64, dst []float32) error {
	t, ok := u.Info(name)
	if !ok {
		return &UpdateError{File: u.Name(), Tensor: name, Msg: "no such tensor"}
	}
	if elem < 0 || elem+int64(len(dst)) > t.NumElements() {
		return &UpdateError{File: u.Name(), Tensor: name, Msg: fmt.Sprintf("read [%d, %d) outside its %d elements", elem, elem+int64(len(dst)), t.NumElements())}
	}
	if len(dst) == 0 {
		return nil
	}
	if v, ok := u.f.Float32View(name); ok {
		copy(dst, v[elem:])
		return nil
	}
	if t.DType != safetensors.I8 {
		d.raw = grow(d.raw, len(dst)*t.DType.Size())
		if err := u.f.ReadFloat32At(name, elem, dst, d.raw); err != nil {
			return &UpdateError{File: u.Name(), Tensor: name, Msg: "read", Err: err}
		}
		return nil
	}
	m := len(dst)
	d.raw = grow(d.raw, m)
	if err := u.f.ReadRawAt(name, elem, d.raw[:m]); err != nil {
		return &UpdateError{File: u.Name(), Tensor: name, Msg: "read", Err: err}
	}
	d.q = grow(d.q, m)
	q := d.q[:m]
	for i, b := range d.raw[:m] {
		q[i] = int8(b)
	}
	block := int64(u.block)
	first, last := elem/block, (elem+int64(m)-1)/block
	nb := int(last - first + 1)
	d.scales = grow(d.scales, nb)
	sc := d.scales[:nb]
	if err := u.f.ReadFloat32At(name+ScalesSuffix, first, sc, nil); err != nil {
		return &UpdateError{File: u.Name(), Tensor: name + ScalesSuffix, Msg: "read", Err: err}
	}
	// The first block may be partial when elem is not block-aligned.
	if r := int(elem % block); r != 0 {
		head := min(m, u.block-r)
		d.be.DequantizeInt8(dst[:head], q[:head], sc[:1], u.block)
		dst, q, sc = dst[head:], q[head:], sc[1:]
	}
	if len(dst) > 0 {
		d.be.DequantizeInt8(dst, q, sc[:(len(dst)+u.block-1)/u.block], u.block)
	}
	return nil
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// EncodeInt8 quantizes the float tensor x (named name, of shape shape) in
// blocks of block elements with be (nil: kernels.Default()) and returns the
// I8 tensor and its "name.__scales__" F32 tensor. Write them with
// Int8Metadata(block) as the file's metadata.
func EncodeInt8(be kernels.Backend, name string, shape []int, x []float32, block int) (q, scales safetensors.Tensor, err error) {
	if be == nil {
		be = kernels.Default()
	}
	if block <= 0 || block > MaxQuantBlock {
		return q, scales, fmt.Errorf("encode %q as int8: block %d outside [1, %d]", name, block, MaxQuantBlock)
	}
	info := safetensors.TensorInfo{Name: name, DType: safetensors.I8, Shape: shape}
	if info.NumElements() != int64(len(x)) {
		return q, scales, fmt.Errorf("encode %q as int8: %d values for shape %v", name, len(x), shape)
	}
	if i := be.FirstNonFinite(x); i >= 0 {
		return q, scales, fmt.Errorf("encode %q as int8: element %d is %v", name, i, x[i])
	}
	nb := (len(x) + block - 1) / block
	qs := make([]int8, len(x))
	sc := make([]float32, nb)
	be.QuantizeInt8(qs, sc, x, block)
	data := make([]byte, len(qs))
	for i, v := range qs {
		data[i] = byte(v)
	}
	q = safetensors.Tensor{Name: name, DType: safetensors.I8, Shape: shape, Data: data}
	scales, err = safetensors.FromFloat32(name+ScalesSuffix, safetensors.F32, []int{nb}, sc)
	return q, scales, err
}

// Int8Metadata returns the "__metadata__" an int8-encoded update carries.
func Int8Metadata(block int) map[string]string {
	return map[string]string{MetaQuant: QuantInt8, MetaBlock: strconv.Itoa(block)}
}

// QuantizeTensors encodes every float tensor of ts as int8 with per-block
// scales and returns the tensors and metadata to write (for example with
// safetensors.WriteFile). extra metadata (kind, num_samples) is merged in.
func QuantizeTensors(be kernels.Backend, ts []safetensors.Tensor, block int, extra map[string]string) ([]safetensors.Tensor, map[string]string, error) {
	out := make([]safetensors.Tensor, 0, 2*len(ts))
	dec := NewDecoder(be)
	for _, t := range ts {
		if !t.DType.IsFloat() {
			return nil, nil, fmt.Errorf("quantize %q: dtype %s is not a float type", t.Name, t.DType)
		}
		x := make([]float32, t.Info().NumElements())
		if err := safetensors.DecodeFloat32(t.DType, x, t.Data); err != nil {
			return nil, nil, fmt.Errorf("quantize %q: %w", t.Name, err)
		}
		q, sc, err := EncodeInt8(dec.be, t.Name, t.Shape, x, block)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, q, sc)
	}
	meta := Int8Metadata(block)
	for k, v := range extra {
		meta[k] = v
	}
	return out, meta, nil
}
