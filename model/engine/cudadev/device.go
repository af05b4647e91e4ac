//go:build fedcuda || fedcudaemu

package cudadev

import (
	"errors"
	"fmt"
	"github.com/fedtune/fedtune/kernels/cuda"
	"unsafe"

	"github.com/fedtune/fedtune/model/engine"
)

// Launch shapes.
const (
	ewThreads   = 256     // element-wise kernels
	ewMaxBlocks = 1 << 15 // grid-stride beyond
	maxRowGrid  = 1 << 20 // row kernels: one block per row up to this
	sqnThreads  = 256
	dwSlices    = 8 // DW_SLICES of train_rmsnorm_backward_dw
)

// sqnBlocks is the number of squared-norm partials (2 per H100 SM); the
// emulation uses fewer.
var sqnBlocks = 264

// Device is an engine.Device on one GPU.
type Device struct {
	ctx     *gpuContext
	ordinal int
	err     error
	live    map[*buffer]struct{}
	liveInt map[*intBuffer]struct{}
	sqn     ptr // sqnBlocks+1 float64s: partials, then the result
	closed  bool

	scratch  ptr // CachedAttention's scores (attnScratch)
	scratchN int // its float32s
}

var _ engine.Device = (*Device)(nil)

// buffer is a float32 device allocation.
type buffer struct {
	p   ptr
	n   int
	dev *Device
}

// Len implements engine.Buffer.
func (b *buffer) Len() int { return b.n }

// intBuffer is an int32 device allocation with a host copy of its
// contents (only WriteInt changes them).
type intBuffer struct {
	p    ptr
	n    int
	host []int32
	dev  *Device
}

// Len implements engine.IntBuffer.
func (b *intBuffer) Len() int { return b.n }

// Open opens GPU ordinal. Its error wraps ErrNoDevice when the machine has
// no usable GPU.
func Open(ordinal int) (engine.Device, error) {
	ctx, err := openContext(ordinal)
	if err != nil {
		return nil, fmt.Errorf("cudadev: open GPU %d: %w", ordinal, err)
	}
	// The aggregation kernels do without cuBLAS; training does not (the
	// emulation's blas_sgemm kernel stands in for it there).
	if err := ctx.BLASError(); err != nil && !cuda.Emulated {
		_ = ctx.Close()
		return nil, fmt.Errorf("cudadev: GPU %d: cuBLAS is needed for training: %w", ordinal, err)
	}
	d := &Device{ctx: ctx, ordinal: ordinal, live: map[*buffer]struct{}{}, liveInt: map[*intBuffer]struct{}{}}
	if d.sqn, err = d.alloc((sqnBlocks + 1) * 8); err != nil {
		_ = ctx.Close()
		return nil, fmt.Errorf("cudadev: GPU %d: %w", ordinal, err)
	}
	return d, nil
}

// Name implements engine.Device.
func (d *Device) Name() string { return fmt.Sprintf("cuda:%d", d.ordinal) }

// fail records err unless an earlier error is pending.
func (d *Device) fail(err error) {
	if d.err == nil && err != nil {
		d.err = err
	}
}

// failf records a usage error (wrapping engine.ErrDevice, as the Host
// device's do). Driver and kernel failures wrap kernels/cuda's errors.
func (d *Device) failf(format string, args ...any) {
	d.fail(fmt.Errorf("%w: %s: %s", engine.ErrDevice, d.Name(), fmt.Sprintf(format, args...)))
}

// ok reports whether operations may run.
func (d *Device) ok() bool {
	if d.closed && d.err == nil {
		d.err = fmt.Errorf("%w: device %s is closed", engine.ErrDevice, d.Name())
	}
	return d.err == nil
}

// buf returns b as this device's live buffer, recording an error for a
// nil, foreign or freed one, or one shorter than need elements.
func (d *Device) buf(op, name string, b engine.Buffer, need int) *buffer {
	if d.err != nil {
		return nil
	}
	x, isOurs := b.(*buffer)
	switch {
	case b == nil || (isOurs && x == nil):
		d.failf("%s: %s is nil", op, name)
		return nil
	case !isOurs || x.dev != d:
		d.failf("%s: %s is not a buffer of %s", op, name, d.Name())
		return nil
	}
	if _, live := d.live[x]; !live {
		d.failf("%s: %s was freed", op, name)
		return nil
	}
	if x.n < need {
		d.failf("%s: %s has %d elements, needs %d", op, name, x.n, need)
		return nil
	}
	return x
}

// exact returns b as buf does, recording an error unless it has exactly n
// elements (shape names them).
func (d *Device) exact(op, name string, b engine.Buffer, n int, shape string) *buffer {
	x := d.buf(op, name, b, 0)
	if x != nil && x.n != n {
		d.failf("%s: %s has %d elements, want %d (%s)", op, name, x.n, n, shape)
		return nil
	}
	return x
}

// noAlias records an error when out is one of ins (buffers are whole
// allocations, so aliasing is identity).
func (d *Device) noAlias(op string, out *buffer, outName string, ins ...any) bool {
	if d.err != nil || out == nil {
		return false
	}
	for i := 0; i+1 < len(ins); i += 2 {
		if in, _ := ins[i+1].(*buffer); in == out && out.n > 0 {
			d.failf("%s: %s must not alias %s", op, outName, ins[i])
			return false
		}
	}
	return true
}

// ibuf is buf for int buffers.
func (d *Device) ibuf(op, name string, b engine.IntBuffer, need int) *intBuffer {
	if d.err != nil {
		return nil
	}
	x, isOurs := b.(*intBuffer)
	switch {
	case b == nil || (isOurs && x == nil):
		d.failf("%s: %s is nil", op, name)
		return nil
	case !isOurs || x.dev != d:
		d.failf("%s: %s is not an int buffer of %s", op, name, d.Name())
		return nil
	}
	if _, live := d.liveInt[x]; !live {
		d.failf("%s: %s was freed", op, name)
		return nil
	}
	if x.n < need {
		d.failf("%s: %s has %d elements, needs %d", op, name, x.n, need)
		return nil
	}
	return x
}

// positive records an error unless every value is positive.
func (d *Device) positive(op string, kv ...any) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		if v := kv[i+1].(int); v <= 0 {
			d.failf("%s: %s must be positive, got %d", op, kv[i], v)
			return false
		}
	}
	return d.err == nil
}

// fits32 records an error when n does not fit a kernel's int argument.
func (d *Device) fits32(op string, n int) bool {
	if n > 1<<31-1 {
		d.failf("%s: %d elements is more than a kernel indexes", op, n)
		return false
	}
	return true
}

// Alloc implements engine.Device.
func (d *Device) Alloc(n int) engine.Buffer {
	b := &buffer{n: n, dev: d}
	if n < 0 {
		d.failf("alloc: negative length %d", n)
		b.n = 0
		return b
	}
	if !d.ok() {
		b.n = 0
		return b
	}
	if n > 0 {
		p, err := d.alloc(4 * n)
		if err != nil {
			d.fail(fmt.Errorf("cudadev: alloc %d float32s: %w", n, err))
			b.n = 0
			return b
		}
		b.p = p // zero-filled by the Context
	}
	d.live[b] = struct{}{}
	return b
}

// AllocInt implements engine.Device.
func (d *Device) AllocInt(n int) engine.IntBuffer {
	b := &intBuffer{n: n, dev: d}
	if n < 0 {
		d.failf("alloc int: negative length %d", n)
		b.n = 0
		return b
	}
	if !d.ok() {
		b.n = 0
		return b
	}
	if n > 0 {
		p, err := d.alloc(4 * n)
		if err != nil {
			d.fail(fmt.Errorf("cudadev: alloc %d int32s: %w", n, err))
			b.n = 0
			return b
		}
		b.p = p // zero-filled by the Context
	}
	b.host = make([]int32, n)
	d.liveInt[b] = struct{}{}
	return b
}

// Free implements engine.Device.
func (d *Device) Free(b engine.Buffer) {
	if b == nil {
		return
	}
	x, isOurs := b.(*buffer)
	if !isOurs || x == nil {
		if isOurs { // a typed nil
			return
		}
		d.failf("free: not a buffer of %s", d.Name())
		return
	}
	if _, live := d.live[x]; !live {
		if x.dev == d {
			d.failf("free: buffer freed twice")
		} else {
			d.failf("free: not a buffer of %s", d.Name())
		}
		return
	}
	delete(d.live, x)
	if x.p != 0 {
		d.fail(d.free(x.p))
		x.p = 0
	}
}

// FreeInt implements engine.Device.
func (d *Device) FreeInt(b engine.IntBuffer) {
	if b == nil {
		return
	}
	x, isOurs := b.(*intBuffer)
	if !isOurs || x == nil {
		if isOurs {
			return
		}
		d.failf("free int: not an int buffer of %s", d.Name())
		return
	}
	if _, live := d.liveInt[x]; !live {
		if x.dev == d {
			d.failf("free int: buffer freed twice")
		} else {
			d.failf("free int: not an int buffer of %s", d.Name())
		}
		return
	}
	delete(d.liveInt, x)
	if x.p != 0 {
		d.fail(d.free(x.p))
		x.p = 0
	}
	x.host = nil
}

// Write implements engine.Device.
func (d *Device) Write(dst engine.Buffer, off int, src []float32) {
	if off < 0 {
		d.failf("write: negative offset %d", off)
		return
	}
	b := d.buf("write", "dst", dst, off+len(src))
	if b == nil || !d.ok() || len(src) == 0 {
		return
	}
	d.fail(d.htod(b.p+ptr(4*off), unsafe.Pointer(&src[0]), 4*len(src)))
}

// WriteInt implements engine.Device.
func (d *Device) WriteInt(dst engine.IntBuffer, src []int32) {
	b := d.ibuf("write int", "dst", dst, len(src))
	if b == nil || !d.ok() || len(src) == 0 {
		return
	}
	if err := d.htod(b.p, unsafe.Pointer(&src[0]), 4*len(src)); err != nil {
		d.fail(err)
		return
	}
	copy(b.host, src)
}

// Read implements engine.Device.
func (d *Device) Read(dst []float32, src engine.Buffer, off int) {
	if off < 0 {
		d.failf("read: negative offset %d", off)
		return
	}
	b := d.buf("read", "src", src, off+len(dst))
	if b == nil || !d.ok() || len(dst) == 0 {
		return
	}
	d.fail(d.dtoh(unsafe.Pointer(&dst[0]), b.p+ptr(4*off), 4*len(dst)))
}

// Zero implements engine.Device.
func (d *Device) Zero(b engine.Buffer) {
	x := d.buf("zero", "b", b, 0)
	if x == nil || !d.ok() || x.n == 0 {
		return
	}
	d.memset(x.p, 4*x.n)
}

// Copy implements engine.Device.
func (d *Device) Copy(dst, src engine.Buffer) {
	s := d.buf("copy", "src", src, 0)
	if s == nil {
		return
	}
	t := d.buf("copy", "dst", dst, s.n)
	if t == nil || !d.ok() {
		return
	}
	if t.n != s.n {
		d.failf("copy: dst has %d elements, src %d", t.n, s.n)
		return
	}
	if s.n > 0 && t != s {
		d.fail(d.dtod(t.p, s.p, 4*s.n))
	}
}

// Sync implements engine.Device.
func (d *Device) Sync() error {
	if d.closed {
		err := d.err
		d.err = nil
		if err == nil {
			err = fmt.Errorf("%w: device %s is closed", engine.ErrDevice, d.Name())
		}
		return err
	}
	if d.err == nil {
		d.fail(d.sync())
	}
	err := d.err
	d.err = nil
	return err
}

// Close implements engine.Device: it waits for the stream, frees every
// buffer still allocated and releases the GPU context.
func (d *Device) Close() error {
	if d.closed {
		return nil
	}
	err := d.sync()
	for b := range d.live {
		if b.p != 0 {
			err = errors.Join(err, d.free(b.p))
			b.p = 0
		}
	}
	for b := range d.liveInt {
		if b.p != 0 {
			err = errors.Join(err, d.free(b.p))
			b.p = 0
		}
	}
	clear(d.live)
	clear(d.liveInt)
	if d.sqn != 0 {
		err = errors.Join(err, d.free(d.sqn))
		d.sqn = 0
	}
	if d.scratch != 0 {
		err = errors.Join(err, d.free(d.scratch))
		d.scratch, d.scratchN = 0, 0
	}
	err = errors.Join(err, d.ctx.Close())
	d.closed = true
	if err != nil {
		return fmt.Errorf("cudadev: close %s: %w", d.Name(), err)
	}
	return nil
}
