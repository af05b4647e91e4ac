//go:build fedcudaemu && !fedcuda

package cuda

/*
#cgo CXXFLAGS: -std=c++20 -O2 -fno-strict-aliasing
#cgo LDFLAGS: -lstdc++
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int fedtune_emu_launch(const char *name, int grid, int block, const uint64_t *a, int n);
const char *fedtune_emu_kernel(int i);

static uintptr_t fedtune_emu_alloc(int64_t n) { return (uintptr_t)calloc((size_t)n, 1); }
static void fedtune_emu_free(uintptr_t p) { free((void *)p); }
static void fedtune_emu_htod(uintptr_t dst, const void *src, int64_t n) { memmove((void *)dst, src, (size_t)n); }
static void fedtune_emu_dtoh(void *dst, uintptr_t src, int64_t n) { memmove(dst, (const void *)src, (size_t)n); }
static void fedtune_emu_dtod(uintptr_t dst, uintptr_t src, int64_t n) { memmove((void *)dst, (const void *)src, (size_t)n); }
static void fedtune_emu_memset(uintptr_t dst, int64_t n) { memset((void *)dst, 0, (size_t)n); }
*/
import "C"

import (
	"embed"
	"fmt"
	"sort"
	"sync"
	"unsafe"
)

// With the build tag fedcudaemu alone (no fedcuda) the package builds
// without CUDA: no gorgonia.org/cu, no CUDA headers, no libcuda, only a C++
// compiler. Context is then a CPU emulation of one GPU: device memory is
// host memory from calloc, and Launch runs the kernels of aggregate.cu,
// blas.cu and train.cu, compiled as host C++ by emu.cpp, over every thread
// of the grid before it returns. It exists to test Backend and the kernels' logic and
// IEEE arithmetic without a GPU (not nvcc's code generation), and it is
// slow. The "cuda" kernels backend is not registered in this build.

// Emulated reports whether Context is the CPU emulation (build tag
// fedcudaemu without fedcuda).
const Emulated = true

// DevicePtr is a device address; in the CPU emulation, an address in the C
// heap. Byte offsets are plain addition.
type DevicePtr uintptr

// emuSources are the kernel sources emu.cpp includes. The go tool does not
// know .cu files; embedding them makes it rebuild the emulator whenever the
// kernels change.
//
//go:embed aggregate.cu blas.cu train.cu
var emuSources embed.FS

// emuMu serialises launches: the emulator's grid state is global.
var emuMu sync.Mutex

// emuKernels are the kernels emu.cpp runs.
var emuKernels = sync.OnceValue(func() map[string]bool {
	ks := map[string]bool{}
	for i := C.int(0); ; i++ {
		name := C.fedtune_emu_kernel(i)
		if name == nil {
			return ks
		}
		ks[C.GoString(name)] = true
	}
})

// errEmuBLAS is why the emulated Context has no cuBLAS.
var errEmuBLAS = fmt.Errorf("%w: the CPU emulation has none (Sgemm runs fedtune's blas_sgemm kernel)", ErrNoBLAS)

// Context is, in the fedcudaemu build, a CPU emulation of one GPU with the
// GPU build's methods and semantics: work is done when a call returns (so
// it is trivially in stream order), Alloc zero-fills, and every copy is
// checked to lie inside one allocation. Sgemm and SgemmStridedBatched run
// the blas_sgemm kernel (there is no cuBLAS). Every method may be called
// from any goroutine.
type Context struct {
	mu     sync.RWMutex // read-held by every call, write-held by Close
	closed bool

	ordinal int
	name    string

	memMu  sync.Mutex
	allocs map[DevicePtr]int64 // live allocations: base → bytes
}

// Open opens the emulated GPU; only ordinal 0 exists, any other is an
// error wrapping ErrNoDevice.
func Open(ordinal int) (*Context, error) {
	if ordinal != 0 {
		return nil, fmt.Errorf("%w: GPU %d asked for, the CPU emulation has only GPU 0", ErrNoDevice, ordinal)
	}
	return &Context{
		ordinal: ordinal,
		name:    fmt.Sprintf("cuda:%d CPU emulation (emu.cpp)", ordinal),
		allocs:  map[DevicePtr]int64{},
	}, nil
}

// Close frees every allocation still live. Calling Close again returns
// nil.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.memMu.Lock()
	defer c.memMu.Unlock()
	for p := range c.allocs {
		C.fedtune_emu_free(C.uintptr_t(p))
	}
	c.allocs = nil
	return nil
}

// Name describes the emulated GPU, "cuda:0 CPU emulation (emu.cpp)".
func (c *Context) Name() string { return c.name }

// Ordinal returns the GPU's number (0).
func (c *Context) Ordinal() int { return c.ordinal }

// HasKernel reports whether the emulation runs the kernel.
func (c *Context) HasKernel(name string) bool { return emuKernels()[name] }

// Kernels lists the kernels the emulation runs, sorted.
func (c *Context) Kernels() []string {
	names := make([]string, 0, len(emuKernels()))
	for k := range emuKernels() {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// BLASError returns why cuBLAS is unavailable: always, in the emulation.
func (c *Context) BLASError() error { return errEmuBLAS }

// BLASLibrary returns "" and why: the emulation loads no cuBLAS.
func BLASLibrary() (string, error) { return "", errEmuBLAS }

func (c *Context) enter(op string) error {
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return fmt.Errorf("cuda: %s: %w", op, ErrClosed)
	}
	return nil
}

func (c *Context) leave() { c.mu.RUnlock() }

// inside checks that [p, p+bytes) lies in one live allocation, as the
// driver refuses a copy that does not.
func (c *Context) inside(op string, p DevicePtr, bytes int64) error {
	c.memMu.Lock()
	defer c.memMu.Unlock()
	for base, n := range c.allocs {
		if p >= base && p < base+DevicePtr(n) {
			if int64(p-base)+bytes <= n {
				return nil
			}
			return fmt.Errorf("cuda: GPU %d: %s %d bytes at %#x: past the end of the %d-byte allocation at %#x", c.ordinal, op, bytes, uintptr(p), n, uintptr(base))
		}
	}
	return fmt.Errorf("cuda: GPU %d: %s %d bytes at %#x: not in any live allocation", c.ordinal, op, bytes, uintptr(p))
}

// Alloc allocates bytes of zero-filled emulated device memory.
func (c *Context) Alloc(bytes int64) (DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("cuda: Alloc: %d bytes asked for, want > 0", bytes)
	}
	if err := c.enter("Alloc"); err != nil {
		return 0, err
	}
	defer c.leave()
	p := DevicePtr(C.fedtune_emu_alloc(C.int64_t(bytes)))
	if p == 0 {
		return 0, fmt.Errorf("cuda: GPU %d: Alloc %d bytes: out of host memory", c.ordinal, bytes)
	}
	c.memMu.Lock()
	c.allocs[p] = bytes
	c.memMu.Unlock()
	return p, nil
}

// Free releases memory from Alloc. Free(0), and Free of an address Alloc
// did not return, do nothing.
func (c *Context) Free(p DevicePtr) {
	if p == 0 || c.enter("Free") != nil {
		return
	}
	defer c.leave()
	c.memMu.Lock()
	defer c.memMu.Unlock()
	if _, ok := c.allocs[p]; ok {
		delete(c.allocs, p)
		C.fedtune_emu_free(C.uintptr_t(p))
	}
}

// copyOp checks a copy's arguments and device ranges and enters the
// context; on success the caller must call c.leave.
func (c *Context) copyOp(op string, bytes int64, nilPtr bool, devs ...DevicePtr) error {
	if err := checkCopy(op, bytes, nilPtr); err != nil {
		return err
	}
	if err := c.enter(op); err != nil {
		return err
	}
	for _, p := range devs {
		if err := c.inside(op, p, bytes); err != nil {
			c.leave()
			return err
		}
	}
	return nil
}

// HtoD copies bytes from host memory at src to dst.
func (c *Context) HtoD(dst DevicePtr, src unsafe.Pointer, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if err := c.copyOp("HtoD", bytes, dst == 0 || src == nil, dst); err != nil {
		return err
	}
	defer c.leave()
	C.fedtune_emu_htod(C.uintptr_t(dst), src, C.int64_t(bytes))
	return nil
}

// DtoH copies bytes from src to host memory at dst.
func (c *Context) DtoH(dst unsafe.Pointer, src DevicePtr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if err := c.copyOp("DtoH", bytes, dst == nil || src == 0, src); err != nil {
		return err
	}
	defer c.leave()
	C.fedtune_emu_dtoh(dst, C.uintptr_t(src), C.int64_t(bytes))
	return nil
}

// DtoD copies bytes from src to dst.
func (c *Context) DtoD(dst, src DevicePtr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if err := c.copyOp("DtoD", bytes, dst == 0 || src == 0, dst, src); err != nil {
		return err
	}
	defer c.leave()
	C.fedtune_emu_dtod(C.uintptr_t(dst), C.uintptr_t(src), C.int64_t(bytes))
	return nil
}

// Memset zero-fills bytes at dst.
func (c *Context) Memset(dst DevicePtr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	if err := c.copyOp("Memset", bytes, dst == 0, dst); err != nil {
		return err
	}
	defer c.leave()
	C.fedtune_emu_memset(C.uintptr_t(dst), C.int64_t(bytes))
	return nil
}

// Sync returns nil on an open Context: emulated work is done when the call
// that queued it returns.
func (c *Context) Sync() error {
	if err := c.enter("Sync"); err != nil {
		return err
	}
	c.leave()
	return nil
}

// Launch runs the kernel over the grid on the CPU before it returns, with
// the GPU build's argument rules (DevicePtr, int32, int64, uint32, uint64,
// float32 or float64, one per kernel parameter of that width). The
// emulation runs one-dimensional launches without dynamic shared memory
// only; a kernel it does not run is an error wrapping ErrNoKernel.
func (c *Context) Launch(kernel string, grid, block [3]int, sharedBytes int, args ...any) error {
	if !emuKernels()[kernel] {
		return fmt.Errorf("%w: %q is not one the CPU emulation runs (emu.cpp)", ErrNoKernel, kernel)
	}
	slots, err := launchSlots(kernel, grid, block, sharedBytes, args)
	if err != nil {
		return err
	}
	if grid[1] != 1 || grid[2] != 1 || block[1] != 1 || block[2] != 1 || sharedBytes != 0 {
		return fmt.Errorf("cuda: Launch %s: grid %v block %v shared %d: the CPU emulation runs one-dimensional launches without dynamic shared memory only", kernel, grid, block, sharedBytes)
	}
	if err := c.enter("Launch"); err != nil {
		return err
	}
	defer c.leave()
	name := C.CString(kernel)
	defer C.free(unsafe.Pointer(name))
	emuMu.Lock()
	defer emuMu.Unlock()
	switch rc := C.fedtune_emu_launch(name, C.int(grid[0]), C.int(block[0]), (*C.uint64_t)(unsafe.Pointer(&slots[0])), C.int(len(args))); rc {
	case 0:
		return nil
	case 2:
		return fmt.Errorf("cuda: Launch %s: block %v: the CPU emulation needs a whole number of warps, at most 1024 threads", kernel, block)
	default:
		return fmt.Errorf("cuda: Launch %s: %d arguments is not the kernel's parameter count", kernel, len(args))
	}
}

// Sgemm computes C = alpha·op(A)·op(B) + beta·C with cublasSgemm_v2's
// column-major semantics on fedtune's blas_sgemm kernel (as the GPU build
// does without cuBLAS).
func (c *Context) Sgemm(transA, transB bool, m, n, k int, alpha float32, a DevicePtr, lda int, b DevicePtr, ldb int, beta float32, cc DevicePtr, ldc int) error {
	if err := checkGemm("Sgemm", m, n, k, lda, ldb, ldc); err != nil {
		return err
	}
	return sgemmKernel(c, transA, transB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, cc, ldc, 0, 1)
}

// SgemmStridedBatched computes batch independent Sgemm products, product i
// using A + i·strideA, B + i·strideB and C + i·strideC (strides in
// elements), on the blas_sgemm kernel.
func (c *Context) SgemmStridedBatched(transA, transB bool, m, n, k int, alpha float32, a DevicePtr, lda int, strideA int64, b DevicePtr, ldb int, strideB int64, beta float32, cc DevicePtr, ldc int, strideC int64, batch int) error {
	if err := checkGemm("SgemmStridedBatched", m, n, k, lda, ldb, ldc, batch); err != nil {
		return err
	}
	return sgemmKernel(c, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, cc, ldc, strideC, batch)
}
