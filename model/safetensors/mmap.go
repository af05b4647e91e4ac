package safetensors

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// ErrNotMapped is returned by OpenMapped where files cannot be memory-mapped
// (an empty file, a platform without mmap); Open still reads them.
var ErrNotMapped = errors.New("safetensors: file cannot be memory-mapped")

// OpenMapped opens and validates the safetensors file at path like Open,
// but maps it into memory read-only, so that RawView and Float32View give
// the tensors' bytes straight from the page cache, without a system call or
// a copy. ReadRawAt, ReadFloat32At and Digest work as for Open. Close
// unmaps the file; views must not be used after it.
//
// A mapped file must not be truncated while it is open: reading a page that
// is no longer backed by the file faults (SIGBUS). Replacing the file by
// rename is safe (the mapping keeps the old contents).
//
// It returns an error wrapping ErrNotMapped, and nothing open, where the
// file cannot be mapped; the caller may then fall back to Open.
func OpenMapped(path string) (*File, error) { return openWith(path, MapFile) }

// MapFile maps the first size bytes of the open file fh (size as its Stat
// says) read-only and parses them as OpenMapped does; name is used in
// errors. On success the returned File owns fh: Close unmaps the data and
// closes fh. On error fh is left open and nothing stays mapped; the error
// wraps ErrNotMapped when the file could not be mapped at all (then Parse
// on fh still can read it), else it is Parse's error.
func MapFile(name string, fh *os.File, size int64) (*File, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, fmt.Errorf("%w: %s is %d bytes", ErrNotMapped, name, size)
	}
	data, err := mmapFile(fh, int(size))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotMapped, name, err)
	}
	f, err := Parse(name, bytes.NewReader(data), size)
	if err != nil {
		munmap(data)
		return nil, err
	}
	f.mapped = data
	f.closer = &mappedCloser{data: data, fh: fh}
	return f, nil
}

type mappedCloser struct {
	data []byte
	fh   *os.File
}

func (c *mappedCloser) Close() error {
	if c.data == nil {
		return nil
	}
	err := munmap(c.data)
	c.data = nil
	if cerr := c.fh.Close(); err == nil {
		err = cerr
	}
	return err
}

// Mapped reports whether f's data is memory-mapped (OpenMapped, MapFile).
func (f *File) Mapped() bool { return f.mapped != nil }

// RawView returns tensor name's raw little-endian bytes as they lie in the
// mapping, without copying; ok is false when f is not mapped or has no such
// tensor. The bytes are read-only (writing them faults) and valid until
// Close.
func (f *File) RawView(name string) (b []byte, ok bool) {
	t, found := f.Info(name)
	if !found || f.mapped == nil {
		return nil, false
	}
	lo := f.dataOff + t.Begin
	return f.mapped[lo : lo+t.NumBytes() : lo+t.NumBytes()], true
}

// Float32View returns the F32 tensor name as a []float32 over the mapping,
// without copying. ok is false (use ReadFloat32At) when f is not mapped,
// the tensor is missing or not F32, the host is not little-endian, or the
// data is not 4-byte aligned. The values are read-only and valid until
// Close.
func (f *File) Float32View(name string) (x []float32, ok bool) {
	t, found := f.Info(name)
	if !found || t.DType != F32 {
		return nil, false
	}
	b, ok := f.RawView(name)
	if !ok {
		return nil, false
	}
	return AsFloat32(b)
}

// Evict tells the system that bytes [off, off+n) of tensor name's data
// will not be read again soon, so that their pages leave this process's
// resident set (they stay in the page cache; a later read maps them back).
// It keeps the memory a streaming pass over a mapped file holds to the
// pages it is working on. It is a no-op for a file that is not mapped.
func (f *File) Evict(name string, off, n int64) {
	t, found := f.Info(name)
	if !found || f.mapped == nil || n <= 0 || off < 0 || off+n > t.NumBytes() {
		return
	}
	lo := f.dataOff + t.Begin + off
	adviseDontNeed(f.mapped, lo, lo+n)
}
