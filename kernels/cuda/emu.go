//go:build fedcuda && fedcudaemu

package cuda

/*
#cgo CXXFLAGS: -std=c++20 -O2 -fno-strict-aliasing
#cgo LDFLAGS: -lstdc++
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int fedtune_emu_launch(const char *name, int grid, int block, const uint64_t *a, int n);

static uintptr_t fedtune_emu_alloc(int64_t n) { return (uintptr_t)calloc((size_t)n, 1); }
static void fedtune_emu_free(uintptr_t p) { free((void *)p); }
static void fedtune_emu_htod(uintptr_t dst, const void *src, int64_t n) { memmove((void *)dst, src, (size_t)n); }
static void fedtune_emu_dtoh(void *dst, uintptr_t src, int64_t n) { memmove(dst, (const void *)src, (size_t)n); }
*/
import "C"

import (
	"embed"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// emuDevice runs aggregate.cu's kernels on the CPU (emu.cpp): "device"
// memory is host memory from calloc, and a launch runs every thread of the
// grid in turn. It exists to test Backend's logic without a GPU; it checks
// the algorithms and the bits of IEEE arithmetic, not nvcc's code.
type emuDevice struct{}

var emuMu sync.Mutex

// emuSources are the kernel sources emu.cpp includes. The go tool does not
// know .cu files; embedding them makes it rebuild the emulator whenever the
// kernels change.
//
//go:embed aggregate.cu blas.cu
var emuSources embed.FS

var _ device = emuDevice{}

// NewEmulatedBackend returns a Backend whose kernels run on the CPU
// emulation (build tag fedcudaemu; for tests).
func NewEmulatedBackend() *Backend {
	return &Backend{c: emuDevice{}, budget: defaultChunkBytes}
}

func (emuDevice) Name() string { return "cuda-emulator (CPU)" }

func (emuDevice) Alloc(bytes int64) (cu.DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("emulator: Alloc: %d bytes", bytes)
	}
	p := C.fedtune_emu_alloc(C.int64_t(bytes))
	if p == 0 {
		return 0, fmt.Errorf("emulator: Alloc %d bytes: out of memory", bytes)
	}
	return cu.DevicePtr(p), nil
}

func (emuDevice) Free(p cu.DevicePtr) {
	if p != 0 {
		C.fedtune_emu_free(C.uintptr_t(p))
	}
}

func (emuDevice) HtoD(dst cu.DevicePtr, src unsafe.Pointer, bytes int64) error {
	C.fedtune_emu_htod(C.uintptr_t(dst), src, C.int64_t(bytes))
	return nil
}

func (emuDevice) DtoH(dst unsafe.Pointer, src cu.DevicePtr, bytes int64) error {
	C.fedtune_emu_dtoh(dst, C.uintptr_t(src), C.int64_t(bytes))
	return nil
}

func (emuDevice) Sync() error { return nil }

func (emuDevice) Launch(kernel string, grid, block [3]int, sharedBytes int, args ...any) error {
	if grid[1] != 1 || grid[2] != 1 || block[1] != 1 || block[2] != 1 {
		return fmt.Errorf("emulator: %s: only one-dimensional launches", kernel)
	}
	a := make([]uint64, max(len(args), 1))
	for i, v := range args {
		switch v := v.(type) {
		case cu.DevicePtr:
			a[i] = uint64(v)
		case int32:
			a[i] = uint64(uint32(v))
		case uint32:
			a[i] = uint64(v)
		case int64:
			a[i] = uint64(v)
		case uint64:
			a[i] = v
		case float32:
			a[i] = uint64(math.Float32bits(v))
		case float64:
			a[i] = math.Float64bits(v)
		default:
			return fmt.Errorf("emulator: %s: argument %d has type %T", kernel, i, v)
		}
	}
	emuMu.Lock() // the emulator's grid state is global
	defer emuMu.Unlock()
	name := C.CString(kernel)
	defer C.free(unsafe.Pointer(name))
	if rc := C.fedtune_emu_launch(name, C.int(grid[0]), C.int(block[0]), (*C.uint64_t)(unsafe.Pointer(&a[0])), C.int(len(args))); rc != 0 {
		return fmt.Errorf("emulator: %s with %d arguments: not emulated (code %d)", kernel, len(args), int(rc))
	}
	return nil
}
