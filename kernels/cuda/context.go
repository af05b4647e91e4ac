//go:build fedcuda

package cuda

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"runtime"
	"sort"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// Emulated reports whether Context is the CPU emulation: false in the GPU
// build.
const Emulated = false

// DevicePtr is a device address: gorgonia.org/cu's, in the GPU build.
// Byte offsets are plain addition.
type DevicePtr = cu.DevicePtr

// Context owns one GPU: the device's primary CUDA context, one stream, the
// fedtune PTX modules and a cuBLAS handle.
//
// Work is ordered on the stream: Launch, DtoD, Memset, Sgemm and
// SgemmStridedBatched are asynchronous (they return once queued), HtoD and
// DtoH wait for the stream's earlier work and for their own copy, and Sync
// waits for everything queued. Errors of asynchronous work surface at the
// next call that waits.
//
// Every method may be called from any goroutine: each one locks the calling
// goroutine to its OS thread and makes the context current on that thread
// (cuCtxSetCurrent) for the length of the call, so nothing depends on which
// thread ran an earlier call. Calls from several goroutines at once are
// safe; their order on the stream is the order in which they reach it.
type Context struct {
	mu     sync.RWMutex // read-held by every call, write-held by Close
	closed bool

	ordinal int
	dev     cu.Device
	ctx     cu.CUContext
	stream  cu.Stream
	modules []cu.Module
	kernels map[string]cu.Function
	name    string

	blas    unsafe.Pointer // cublasHandle_t, nil if cuBLAS could not be loaded
	blasErr error
}

// Open opens GPU number ordinal (0 is the first): it retains the device's
// primary context, creates the stream, JIT-compiles the embedded PTX for the
// GPU and creates a cuBLAS handle bound to the stream. The error wraps
// ErrNoDevice when there is no driver, no GPU or no GPU with that ordinal.
//
// A missing cuBLAS library does not fail Open: Sgemm and
// SgemmStridedBatched then run fedtune's own (slower) kernel, a warning is
// logged, and BLASError says why cuBLAS was not loaded.
func Open(ordinal int) (*Context, error) {
	if err := initError(); err != nil {
		return nil, err
	}
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("%w: counting devices: %v", ErrNoDevice, err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("%w: GPU %d asked for, %d present", ErrNoDevice, ordinal, n)
	}
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return nil, fmt.Errorf("%w: GPU %d: %v", ErrNoDevice, ordinal, err)
	}
	devName, err := dev.Name()
	if err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: name: %w", ordinal, err)
	}
	major, minor, err := dev.ComputeCapability()
	if err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: compute capability: %w", ordinal, err)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: retaining the primary context: %w", ordinal, err)
	}
	c := &Context{
		ordinal: ordinal,
		dev:     dev,
		ctx:     ctx,
		kernels: map[string]cu.Function{},
		name:    fmt.Sprintf("cuda:%d %s (sm_%d%d)", ordinal, devName, major, minor),
	}
	if err := c.setup(); err != nil {
		c.teardown()
		return nil, err
	}
	return c, nil
}

// setup runs on a locked thread during Open.
func (c *Context) setup() error {
	if err := cu.SetCurrentContext(c.ctx); err != nil {
		return fmt.Errorf("cuda: GPU %d: making the context current: %w", c.ordinal, err)
	}
	s, err := cu.MakeStream(cu.NonBlocking)
	if err != nil {
		return fmt.Errorf("cuda: GPU %d: creating the stream: %w", c.ordinal, err)
	}
	c.stream = s
	if err := c.loadModules(); err != nil {
		return err
	}
	c.blas, c.blasErr = newBLAS(c.streamHandle())
	if c.blasErr != nil {
		slog.Warn("cuBLAS unavailable; matrix products use fedtune's own slower kernel", "gpu", c.name, "err", c.blasErr)
	}
	return nil
}

// loadModules JIT-compiles every embedded PTX file and looks up its kernels.
func (c *Context) loadModules() error {
	names, from, err := embeddedPTX()
	if err != nil {
		return err
	}
	mods := map[string]cu.Module{}
	for _, name := range names {
		src, err := ptxFiles.ReadFile(name)
		if err != nil {
			return fmt.Errorf("cuda: reading embedded %s: %w", name, err)
		}
		mod, err := cu.LoadData(string(src))
		if err != nil {
			return fmt.Errorf("cuda: GPU %d: loading %s (JIT compilation of the PTX): %w", c.ordinal, name, err)
		}
		c.modules = append(c.modules, mod)
		mods[path.Base(name)] = mod
	}
	for k, file := range from {
		fn, err := mods[file].Function(k)
		if err != nil {
			return fmt.Errorf("cuda: %s: kernel %q: %w", file, k, err)
		}
		c.kernels[k] = fn
	}
	return nil
}

// teardown releases what setup acquired; it runs on a locked thread.
func (c *Context) teardown() error {
	var errs []error
	if err := cu.SetCurrentContext(c.ctx); err != nil {
		errs = append(errs, fmt.Errorf("making the context current: %w", err))
	}
	if c.blas != nil {
		if err := destroyBLAS(c.blas); err != nil {
			errs = append(errs, err)
		}
		c.blas = nil
	}
	for _, m := range c.modules {
		if err := m.Unload(); err != nil {
			errs = append(errs, fmt.Errorf("unloading a module: %w", err))
		}
	}
	c.modules = nil
	if c.streamHandle() != nil {
		if err := c.stream.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroying the stream: %w", err))
		}
		c.stream = cu.Stream{}
	}
	if err := c.dev.ReleasePrimaryCtx(); err != nil {
		errs = append(errs, fmt.Errorf("releasing the primary context: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cuda: GPU %d: closing: %w", c.ordinal, err)
	}
	return nil
}

// Close waits for the stream's work, then releases the stream, the modules,
// the cuBLAS handle and the context. Memory allocated with Alloc and not
// freed is released with the primary context once no Context on this GPU
// remains open. Calling Close again returns nil.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var errs []error
	if err := cu.SetCurrentContext(c.ctx); err == nil {
		if err := c.stream.Synchronize(); err != nil {
			errs = append(errs, fmt.Errorf("cuda: GPU %d: waiting for the stream: %w", c.ordinal, err))
		}
	}
	errs = append(errs, c.teardown())
	return errors.Join(errs...)
}

// Name describes the GPU, e.g. "cuda:0 NVIDIA H100 80GB HBM3 (sm_90)".
func (c *Context) Name() string { return c.name }

// Ordinal returns the GPU's number.
func (c *Context) Ordinal() int { return c.ordinal }

// HasKernel reports whether the embedded PTX defines the kernel.
func (c *Context) HasKernel(name string) bool {
	_, ok := c.kernels[name]
	return ok
}

// BLASError returns why cuBLAS is unavailable, nil when it is loaded.
func (c *Context) BLASError() error { return c.blasErr }

// streamHandle returns the CUstream inside c.stream (cu keeps it unexported;
// the struct holds nothing else).
func (c *Context) streamHandle() unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&c.stream))
}

// enter starts a call: it holds c.mu for reading, locks the goroutine to
// its thread and makes the context current there. leave undoes it.
func (c *Context) enter(op string) error {
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return fmt.Errorf("cuda: %s: %w", op, ErrClosed)
	}
	runtime.LockOSThread()
	if err := cu.SetCurrentContext(c.ctx); err != nil {
		runtime.UnlockOSThread()
		c.mu.RUnlock()
		return fmt.Errorf("cuda: GPU %d: %s: making the context current: %w", c.ordinal, op, err)
	}
	return nil
}

func (c *Context) leave() {
	runtime.UnlockOSThread()
	c.mu.RUnlock()
}

// Alloc allocates bytes of device memory, zero-filled (the fill is queued
// on the stream, so it is done before any later work on it).
func (c *Context) Alloc(bytes int64) (DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("cuda: Alloc: %d bytes asked for, want > 0", bytes)
	}
	if err := c.enter("Alloc"); err != nil {
		return 0, err
	}
	defer c.leave()
	p, err := cu.MemAlloc(bytes)
	if err != nil {
		return 0, fmt.Errorf("cuda: GPU %d: Alloc %d bytes: %w", c.ordinal, bytes, err)
	}
	if err := cu.MemsetD8Async(p, 0, bytes, c.stream); err != nil {
		_ = cu.MemFree(p)
		return 0, fmt.Errorf("cuda: GPU %d: Alloc %d bytes: zero-filling: %w", c.ordinal, bytes, err)
	}
	return p, nil
}

// Free releases memory from Alloc (after the stream's earlier work, as
// cuMemFree does). Free(0) does nothing.
func (c *Context) Free(p DevicePtr) {
	if p == 0 || c.enter("Free") != nil {
		return
	}
	defer c.leave()
	_ = c.stream.Synchronize() // cuMemFree must not pull memory from under queued work
	_ = cu.MemFree(p)
}

// HtoD copies bytes from host memory at src to dst, after the stream's
// earlier work, and returns when the copy is done.
func (c *Context) HtoD(dst DevicePtr, src unsafe.Pointer, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if err := checkCopy("HtoD", bytes, dst == 0 || src == nil); err != nil {
		return err
	}
	if err := c.enter("HtoD"); err != nil {
		return err
	}
	defer c.leave()
	if err := cu.MemcpyHtoDAsync(dst, src, bytes, c.stream); err != nil {
		return fmt.Errorf("cuda: GPU %d: HtoD %d bytes: %w", c.ordinal, bytes, err)
	}
	if err := c.stream.Synchronize(); err != nil {
		return fmt.Errorf("cuda: GPU %d: HtoD %d bytes: %w", c.ordinal, bytes, err)
	}
	return nil
}

// DtoH copies bytes from src to host memory at dst, after the stream's
// earlier work, and returns when the copy is done.
func (c *Context) DtoH(dst unsafe.Pointer, src DevicePtr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if err := checkCopy("DtoH", bytes, dst == nil || src == 0); err != nil {
		return err
	}
	if err := c.enter("DtoH"); err != nil {
		return err
	}
	defer c.leave()
	if err := cu.MemcpyDtoHAsync(dst, src, bytes, c.stream); err != nil {
		return fmt.Errorf("cuda: GPU %d: DtoH %d bytes: %w", c.ordinal, bytes, err)
	}
	if err := c.stream.Synchronize(); err != nil {
		return fmt.Errorf("cuda: GPU %d: DtoH %d bytes: %w", c.ordinal, bytes, err)
	}
	return nil
}

// DtoD queues a copy of bytes from src to dst on the stream.
func (c *Context) DtoD(dst, src DevicePtr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if err := checkCopy("DtoD", bytes, dst == 0 || src == 0); err != nil {
		return err
	}
	if err := c.enter("DtoD"); err != nil {
		return err
	}
	defer c.leave()
	if err := cu.MemcpyDtoDAsync(dst, src, bytes, c.stream); err != nil {
		return fmt.Errorf("cuda: GPU %d: DtoD %d bytes: %w", c.ordinal, bytes, err)
	}
	return nil
}

// Memset queues zero-filling bytes at dst on the stream.
func (c *Context) Memset(dst DevicePtr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if err := checkCopy("Memset", bytes, dst == 0); err != nil {
		return err
	}
	if err := c.enter("Memset"); err != nil {
		return err
	}
	defer c.leave()
	if err := cu.MemsetD8Async(dst, 0, bytes, c.stream); err != nil {
		return fmt.Errorf("cuda: GPU %d: Memset %d bytes: %w", c.ordinal, bytes, err)
	}
	return nil
}

// Sync waits for all work queued on the stream and returns the first error
// it raised (a kernel fault, for instance).
func (c *Context) Sync() error {
	if err := c.enter("Sync"); err != nil {
		return err
	}
	defer c.leave()
	if err := c.stream.Synchronize(); err != nil {
		return fmt.Errorf("cuda: GPU %d: Sync: %w", c.ordinal, err)
	}
	return nil
}

// Launch queues the kernel on the stream with the given grid and block
// (every dimension >= 1) and dynamic shared memory. Each argument is one of
// DevicePtr, int32, int64, uint32, uint64, float32 and float64, matching
// the kernel's parameter of the same width (pointer, int, long long,
// unsigned, unsigned long long, float, double).
func (c *Context) Launch(kernel string, grid, block [3]int, sharedBytes int, args ...any) error {
	fn, ok := c.kernels[kernel]
	if !ok {
		return fmt.Errorf("%w: %q is in none of the embedded ptx/*.ptx (run make kernels?)", ErrNoKernel, kernel)
	}
	slots, err := launchSlots(kernel, grid, block, sharedBytes, args)
	if err != nil {
		return err
	}
	// cu copies 8 bytes from each parameter pointer; the driver reads as
	// many as the kernel's parameter has, from the start of the slot.
	params := make([]unsafe.Pointer, len(args))
	for i := range args {
		params[i] = unsafe.Pointer(&slots[i])
	}
	if err := c.enter("Launch"); err != nil {
		return err
	}
	defer c.leave()
	if err := fn.Launch(grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, c.stream, params); err != nil {
		return fmt.Errorf("cuda: GPU %d: Launch %s grid %v block %v: %w", c.ordinal, kernel, grid, block, err)
	}
	return nil
}

// Kernels lists the kernels of the embedded PTX, sorted.
func (c *Context) Kernels() []string {
	names := make([]string, 0, len(c.kernels))
	for k := range c.kernels {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
