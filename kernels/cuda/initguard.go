//go:build fedcuda

package cuda

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <cuda.h>

// gorgonia.org/cu calls cuInit from its package init and exits the process
// when it fails. This definition takes the place of the driver's for every
// caller linked into the binary (an object's definition wins over a shared
// library's): it calls the driver's cuInit, keeps its result for Open to
// report, and tells the caller it succeeded. On a machine with a GPU the
// driver's call succeeds and nothing changes; without one, every later
// driver call fails with CUDA_ERROR_NOT_INITIALIZED, which Open never lets
// happen because it checks the kept result first.
static int fedtune_cuinit_done = 0;
static CUresult fedtune_cuinit_result = CUDA_ERROR_NOT_INITIALIZED;
static int fedtune_cuinit_missing = 0;

typedef CUresult (*fedtune_cuinit_fn)(unsigned int);

CUresult CUDAAPI cuInit(unsigned int flags) {
	fedtune_cuinit_fn real = (fedtune_cuinit_fn)dlsym(RTLD_NEXT, "cuInit");
	if (real == NULL || real == cuInit) {
		void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
		real = lib == NULL ? NULL : (fedtune_cuinit_fn)dlsym(lib, "cuInit");
	}
	if (real == NULL || real == cuInit) {
		fedtune_cuinit_missing = 1;
		fedtune_cuinit_result = CUDA_ERROR_NOT_INITIALIZED;
	} else {
		fedtune_cuinit_result = real(flags);
	}
	fedtune_cuinit_done = 1;
	return CUDA_SUCCESS;
}

static CUresult fedtune_init_result(int *done, int *missing) {
	*done = fedtune_cuinit_done;
	*missing = fedtune_cuinit_missing;
	return fedtune_cuinit_result;
}

static const char *fedtune_error_name(CUresult r) {
	const char *s = NULL;
	if (cuGetErrorName(r, &s) != CUDA_SUCCESS) return NULL;
	return s;
}

static const char *fedtune_error_string(CUresult r) {
	const char *s = NULL;
	if (cuGetErrorString(r, &s) != CUDA_SUCCESS) return NULL;
	return s;
}
*/
import "C"

import (
	"fmt"

	_ "gorgonia.org/cu" // its init calls cuInit, which the definition above answers
)

// initError reports the result of the driver's cuInit, nil if it succeeded.
func initError() error {
	var done, missing C.int
	r := C.fedtune_init_result(&done, &missing)
	switch {
	case missing != 0:
		return fmt.Errorf("%w: cuInit not found in libcuda.so.1", ErrNoDevice)
	case done == 0:
		// gorgonia.org/cu's init always runs first; be safe anyway.
		var x C.int
		C.cuInit(0)
		r = C.fedtune_init_result(&done, &x)
	}
	if r != C.CUDA_SUCCESS {
		return fmt.Errorf("%w: cuInit: %v", ErrNoDevice, driverError(r))
	}
	return nil
}

// driverError describes a CUresult by the driver's own name and text.
func driverError(r C.CUresult) error {
	name, text := C.fedtune_error_name(r), C.fedtune_error_string(r)
	if name == nil {
		return fmt.Errorf("CUDA error %d", int(r))
	}
	if text == nil {
		return fmt.Errorf("%s (%d)", C.GoString(name), int(r))
	}
	return fmt.Errorf("%s (%d): %s", C.GoString(name), int(r), C.GoString(text))
}
