//go:build fedcuda

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

// cuBLAS is reached through dlopen, so the binary does not link one
// release's libcublas. The types below are the C ABI of the v2 API
// (cublas_api.h): handles and streams are pointers, enums are int, the
// status is an int.
typedef int (*fedtune_cublasCreate_t)(void **);
typedef int (*fedtune_cublasDestroy_t)(void *);
typedef int (*fedtune_cublasSetStream_t)(void *, void *);
typedef int (*fedtune_cublasSetMathMode_t)(void *, int);
typedef int (*fedtune_cublasSgemm_t)(void *, int, int, int, int, int,
	const float *, const float *, int, const float *, int,
	const float *, float *, int);
typedef int (*fedtune_cublasSgemmStridedBatched_t)(void *, int, int, int, int, int,
	const float *, const float *, int, long long, const float *, int, long long,
	const float *, float *, int, long long, int);

static fedtune_cublasCreate_t fedtune_cublasCreate;
static fedtune_cublasDestroy_t fedtune_cublasDestroy;
static fedtune_cublasSetStream_t fedtune_cublasSetStream;
static fedtune_cublasSetMathMode_t fedtune_cublasSetMathMode;
static fedtune_cublasSgemm_t fedtune_cublasSgemm;
static fedtune_cublasSgemmStridedBatched_t fedtune_cublasSgemmStridedBatched;

// fedtune_cublas_load opens the library and resolves the functions; it
// returns NULL on success, else a description (static or dlerror's).
static const char *fedtune_cublas_load(const char *lib, const char **missing) {
	void *h;
	*missing = NULL;
	dlerror();
	h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		return e != NULL ? e : "dlopen failed";
	}
#define FEDTUNE_SYM(var, sym) \
	var = (var##_t)dlsym(h, sym); \
	if (var == NULL) { *missing = sym; dlclose(h); return "symbol missing"; }
	FEDTUNE_SYM(fedtune_cublasCreate, "cublasCreate_v2")
	FEDTUNE_SYM(fedtune_cublasDestroy, "cublasDestroy_v2")
	FEDTUNE_SYM(fedtune_cublasSetStream, "cublasSetStream_v2")
	FEDTUNE_SYM(fedtune_cublasSetMathMode, "cublasSetMathMode")
	FEDTUNE_SYM(fedtune_cublasSgemm, "cublasSgemm_v2")
	FEDTUNE_SYM(fedtune_cublasSgemmStridedBatched, "cublasSgemmStridedBatched")
#undef FEDTUNE_SYM
	return NULL;
}

static int fedtune_cublas_create(void **handle, void *stream) {
	int st = fedtune_cublasCreate(handle);
	if (st != 0) return st;
	// CUBLAS_DEFAULT_MATH (0): FP32 arithmetic, no TF32 tensor-core
	// shortcuts, so results match the CPU to FP32 rounding.
	st = fedtune_cublasSetMathMode(*handle, 0);
	if (st == 0) st = fedtune_cublasSetStream(*handle, stream);
	if (st != 0) { fedtune_cublasDestroy(*handle); *handle = NULL; }
	return st;
}

static int fedtune_cublas_destroy(void *handle) { return fedtune_cublasDestroy(handle); }

static int fedtune_sgemm(void *h, int ta, int tb, int m, int n, int k, float alpha,
		uintptr_t a, int lda, uintptr_t b, int ldb, float beta, uintptr_t c, int ldc) {
	return fedtune_cublasSgemm(h, ta, tb, m, n, k, &alpha, (const float *)a, lda,
		(const float *)b, ldb, &beta, (float *)c, ldc);
}

static int fedtune_sgemm_strided_batched(void *h, int ta, int tb, int m, int n, int k,
		float alpha, uintptr_t a, int lda, long long sa, uintptr_t b, int ldb, long long sb,
		float beta, uintptr_t c, int ldc, long long sc, int batch) {
	return fedtune_cublasSgemmStridedBatched(h, ta, tb, m, n, k, &alpha,
		(const float *)a, lda, sa, (const float *)b, ldb, sb, &beta, (float *)c, ldc, sc, batch);
}
*/
import "C"

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// blasLibraries are tried in order; the first that loads with every symbol
// wins.
var blasLibraries = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}

var blasLoad = sync.OnceValues(func() (string, error) {
	var tried []string
	for _, lib := range blasLibraries {
		clib := C.CString(lib)
		var missing *C.char
		msg := C.fedtune_cublas_load(clib, &missing)
		C.free(unsafe.Pointer(clib))
		if msg == nil {
			return lib, nil
		}
		if missing != nil {
			tried = append(tried, fmt.Sprintf("%s: no symbol %s", lib, C.GoString(missing)))
		} else {
			tried = append(tried, C.GoString(msg))
		}
	}
	return "", fmt.Errorf("%w: tried %s", ErrNoBLAS, strings.Join(tried, "; "))
})

// BLASLibrary returns the cuBLAS library the process loaded ("" and the
// reason if none).
func BLASLibrary() (string, error) { return blasLoad() }

// newBLAS creates a cuBLAS handle on the current context, bound to stream.
func newBLAS(stream unsafe.Pointer) (unsafe.Pointer, error) {
	if _, err := blasLoad(); err != nil {
		return nil, err
	}
	var h unsafe.Pointer
	if st := C.fedtune_cublas_create(&h, stream); st != 0 {
		return nil, fmt.Errorf("%w: cublasCreate: %v", ErrNoBLAS, blasStatus(st))
	}
	return h, nil
}

func destroyBLAS(h unsafe.Pointer) error {
	if st := C.fedtune_cublas_destroy(h); st != 0 {
		return fmt.Errorf("cublasDestroy: %w", blasStatus(st))
	}
	return nil
}

// blasStatus names a cublasStatus_t.
func blasStatus(st C.int) error {
	names := map[C.int]string{
		1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
		7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH",
		11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
		14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
		16: "CUBLAS_STATUS_LICENSE_ERROR",
	}
	if n, ok := names[st]; ok {
		return fmt.Errorf("%s (%d)", n, int(st))
	}
	return fmt.Errorf("cuBLAS status %d", int(st))
}

func blasOp(trans bool) C.int {
	if trans {
		return 1 // CUBLAS_OP_T
	}
	return 0 // CUBLAS_OP_N
}

// Sgemm queues C = alpha·op(A)·op(B) + beta·C on the stream, with exactly
// cublasSgemm_v2's column-major semantics: op(A) is m×k, op(B) is k×n, C is
// m×n; op(X) is Xᵀ when the trans flag is set. FP32 arithmetic throughout
// (CUBLAS_DEFAULT_MATH: no TF32). Without cuBLAS (BLASError says why) it
// runs fedtune's own tiled kernel (blas.cu): same semantics, slower.
func (c *Context) Sgemm(transA, transB bool, m, n, k int, alpha float32, a DevicePtr, lda int, b DevicePtr, ldb int, beta float32, cc DevicePtr, ldc int) error {
	if err := checkGemm("Sgemm", m, n, k, lda, ldb, ldc); err != nil {
		return err
	}
	if c.blas == nil {
		return sgemmKernel(c, transA, transB, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, cc, ldc, 0, 1)
	}
	if err := c.enter("Sgemm"); err != nil {
		return err
	}
	defer c.leave()
	st := C.fedtune_sgemm(c.blas, blasOp(transA), blasOp(transB), C.int(m), C.int(n), C.int(k),
		C.float(alpha), C.uintptr_t(a), C.int(lda), C.uintptr_t(b), C.int(ldb),
		C.float(beta), C.uintptr_t(cc), C.int(ldc))
	if st != 0 {
		return fmt.Errorf("cuda: GPU %d: Sgemm m=%d n=%d k=%d lda=%d ldb=%d ldc=%d: %w", c.ordinal, m, n, k, lda, ldb, ldc, blasStatus(st))
	}
	return nil
}

// SgemmStridedBatched queues batch independent Sgemm products on the
// stream, product i using A + i·strideA, B + i·strideB and C + i·strideC
// (strides in elements), as cublasSgemmStridedBatched does; without cuBLAS
// on fedtune's own kernel, as Sgemm.
func (c *Context) SgemmStridedBatched(transA, transB bool, m, n, k int, alpha float32, a DevicePtr, lda int, strideA int64, b DevicePtr, ldb int, strideB int64, beta float32, cc DevicePtr, ldc int, strideC int64, batch int) error {
	if err := checkGemm("SgemmStridedBatched", m, n, k, lda, ldb, ldc, batch); err != nil {
		return err
	}
	if c.blas == nil {
		return sgemmKernel(c, transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, cc, ldc, strideC, batch)
	}
	if err := c.enter("SgemmStridedBatched"); err != nil {
		return err
	}
	defer c.leave()
	st := C.fedtune_sgemm_strided_batched(c.blas, blasOp(transA), blasOp(transB), C.int(m), C.int(n), C.int(k),
		C.float(alpha), C.uintptr_t(a), C.int(lda), C.longlong(strideA), C.uintptr_t(b), C.int(ldb), C.longlong(strideB),
		C.float(beta), C.uintptr_t(cc), C.int(ldc), C.longlong(strideC), C.int(batch))
	if st != 0 {
		return fmt.Errorf("cuda: GPU %d: SgemmStridedBatched m=%d n=%d k=%d batch=%d: %w", c.ordinal, m, n, k, batch, blasStatus(st))
	}
	return nil
}
