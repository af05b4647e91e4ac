//go:build fedcudaemu && !fedcuda

package cudadev

/*
#cgo CXXFLAGS: -std=c++20 -O2
#cgo LDFLAGS: -lstdc++ -lpthread
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int emu_launch(const char* name, int grid, int block, const uint64_t* args, int nargs);
void emu_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float* A, int lda,
               const float* B, int ldb, float beta, float* C, int ldc);
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"unsafe"
)

// In the fedcudaemu build the device runs kernels/cuda/train.cu compiled as
// C++ on the CPU (emu_kernels.cc) over host memory from malloc, with a
// plain SGEMM in place of cuBLAS: package cudadev's tests then exercise the
// device code, the launch shapes and the GEMM mapping without a GPU. It is
// slow and for tests only.

// The emulation runs a synchronising block's threads as OS threads: keep
// the squared norm's grid small (the kernel is grid-stride).
func init() { sqnBlocks = 3 }

// ErrNoDevice is returned for an ordinal other than 0 by the emulation.
var ErrNoDevice = errors.New("cudadev: no usable GPU (emulation has only GPU 0)")

// ptr is an address in the emulated device memory (the C heap).
type ptr = uintptr

// gpuContext is the emulated GPU.
type gpuContext struct {
	closed bool
}

func openContext(ordinal int) (*gpuContext, error) {
	if ordinal != 0 {
		return nil, fmt.Errorf("%w: GPU %d asked for", ErrNoDevice, ordinal)
	}
	return &gpuContext{}, nil
}

var errEmuClosed = errors.New("cudadev emulation: context is closed")

func (c *gpuContext) Alloc(bytes int64) (ptr, error) {
	if c.closed {
		return 0, errEmuClosed
	}
	if bytes <= 0 {
		return 0, fmt.Errorf("cudadev emulation: Alloc %d bytes", bytes)
	}
	p := C.calloc(C.size_t(bytes), 1)
	if p == nil {
		return 0, fmt.Errorf("cudadev emulation: out of memory for %d bytes", bytes)
	}
	return ptr(p), nil
}

func (c *gpuContext) Free(p ptr) {
	if p != 0 {
		C.free(cmem(p))
	}
}

func (c *gpuContext) Memset(p ptr, bytes int64) error {
	if c.closed {
		return errEmuClosed
	}
	C.memset(cmem(p), 0, C.size_t(bytes))
	return nil
}

func (c *gpuContext) HtoD(dst ptr, src unsafe.Pointer, bytes int64) error {
	if c.closed {
		return errEmuClosed
	}
	C.memcpy(cmem(dst), src, C.size_t(bytes))
	return nil
}

func (c *gpuContext) DtoH(dst unsafe.Pointer, src ptr, bytes int64) error {
	if c.closed {
		return errEmuClosed
	}
	C.memcpy(dst, cmem(src), C.size_t(bytes))
	return nil
}

func (c *gpuContext) DtoD(dst, src ptr, bytes int64) error {
	if c.closed {
		return errEmuClosed
	}
	C.memmove(cmem(dst), cmem(src), C.size_t(bytes))
	return nil
}

func (c *gpuContext) Sync() error {
	if c.closed {
		return errEmuClosed
	}
	return nil
}

// BLASError reports nil: the emulation's SGEMM is always there.
func (c *gpuContext) BLASError() error { return nil }

func (c *gpuContext) Close() error {
	c.closed = true
	return nil
}

// Launch packs the arguments as kernels/cuda's Context does (8-byte slots,
// 4-byte values in the low half) and runs the emulated kernel.
func (c *gpuContext) Launch(kernel string, grid, block [3]int, sharedBytes int, args ...any) error {
	if c.closed {
		return errEmuClosed
	}
	if grid[1] != 1 || grid[2] != 1 || block[1] != 1 || block[2] != 1 || sharedBytes != 0 {
		return fmt.Errorf("cudadev emulation: %s: only 1-D launches without dynamic shared memory", kernel)
	}
	slots := make([]C.uint64_t, max(len(args), 1))
	for i, a := range args {
		switch v := a.(type) {
		case ptr:
			slots[i] = C.uint64_t(v)
		case int32:
			slots[i] = C.uint64_t(uint32(v))
		case float32:
			slots[i] = C.uint64_t(math.Float32bits(v))
		default:
			return fmt.Errorf("cudadev emulation: %s: argument %d has type %T", kernel, i, a)
		}
	}
	name := C.CString(kernel)
	defer C.free(unsafe.Pointer(name))
	switch rc := C.emu_launch(name, C.int(grid[0]), C.int(block[0]), &slots[0], C.int(len(args))); rc {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("cudadev emulation: no kernel %q", kernel)
	case 2:
		return fmt.Errorf("cudadev emulation: %s: wrong argument count %d", kernel, len(args))
	default:
		return fmt.Errorf("cudadev emulation: %s: bad launch shape grid %v block %v (%d)", kernel, grid, block, int(rc))
	}
}

// cmem turns an emulated device address (C heap memory, which Go's
// collector never moves) into a pointer.
func cmem(p ptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func (c *gpuContext) Sgemm(transA, transB bool, m, n, k int, alpha float32, a ptr, lda int, b ptr, ldb int,
	beta float32, cc ptr, ldc int) error {
	if c.closed {
		return errEmuClosed
	}
	// cublasSgemm's argument checks.
	rowsA, rowsB := m, k
	if transA {
		rowsA = k
	}
	if transB {
		rowsB = n
	}
	if m < 0 || n < 0 || k < 0 || lda < max(1, rowsA) || ldb < max(1, rowsB) || ldc < max(1, m) {
		return fmt.Errorf("cudadev emulation: Sgemm m=%d n=%d k=%d lda=%d ldb=%d ldc=%d", m, n, k, lda, ldb, ldc)
	}
	C.emu_sgemm(cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(cmem(a)), C.int(lda), (*C.float)(cmem(b)), C.int(ldb), C.float(beta),
		(*C.float)(cmem(cc)), C.int(ldc))
	return nil
}

func (c *gpuContext) SgemmStridedBatched(transA, transB bool, m, n, k int, alpha float32, a ptr, lda int, strideA int64,
	b ptr, ldb int, strideB int64, beta float32, cc ptr, ldc int, strideC int64, batch int) error {
	for i := 0; i < batch; i++ {
		if err := c.Sgemm(transA, transB, m, n, k, alpha, a+ptr(4*int64(i)*strideA), lda, b+ptr(4*int64(i)*strideB), ldb,
			beta, cc+ptr(4*int64(i)*strideC), ldc); err != nil {
			return err
		}
	}
	return nil
}
