//go:build fedcudaemu && !fedcuda

package cuda

import (
	"errors"
	"strings"
	"testing"
	"unsafe"
)

// With the build tag fedcudaemu alone the package's tests run on the CPU
// emulation of the GPU (emu.go, emu.cpp), which needs only a C++ compiler:
// the Backend's parity tests check aggregate.cu's kernels and the Backend's
// chunking against kernels.Reference bit for bit, and TestSgemm checks
// blas_sgemm, on machines without CUDA:
//
//	go test -tags fedcudaemu ./kernels/cuda

// TestEmulatedKernels checks that every kernel the emulation runs is one
// the embedded PTX defines, from the source file emu.go embeds.
func TestEmulatedKernels(t *testing.T) {
	c := testContext(t)
	_, from, err := embeddedPTX()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Kernels()) == 0 {
		t.Fatal("the emulation runs no kernels")
	}
	for _, k := range c.Kernels() {
		ptx, ok := from[k]
		if !ok {
			t.Errorf("emulated kernel %s is in no embedded PTX", k)
			continue
		}
		src, err := emuSources.ReadFile(strings.TrimSuffix(ptx, ".ptx") + ".cu")
		if err != nil {
			t.Errorf("kernel %s: %v", k, err)
			continue
		}
		if !strings.Contains(string(src), k+"(") {
			t.Errorf("kernel %s: not defined in the embedded %s source", k, ptx)
		}
	}
	if c.HasKernel("no_such_kernel") {
		t.Error(`HasKernel("no_such_kernel")`)
	}
}

// TestEmulatedMemoryChecks checks that the emulation refuses copies outside
// the allocations, as the driver does, and frees everything at Close.
func TestEmulatedMemoryChecks(t *testing.T) {
	c, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	var buf [80]byte
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"in bounds", c.HtoD(ptr(p, 16), unsafe.Pointer(&buf[0]), 48), ""},
		{"past the end", c.HtoD(ptr(p, 16), unsafe.Pointer(&buf[0]), 49), "past the end of the 64-byte allocation"},
		{"DtoH past the end", c.DtoH(unsafe.Pointer(&buf[0]), p, 80), "past the end"},
		{"DtoD source", c.DtoD(p, p+1000, 8), "not in any live allocation"},
		{"Memset", c.Memset(ptr(p, 64), 1), "not in any live allocation"},
		{"launch shape", c.Launch("agg_scale", [3]int{1, 2, 1}, [3]int{32, 1, 1}, 0, p, float32(1), int64(1)), "one-dimensional"},
		{"parameter count", c.Launch("agg_scale", [3]int{1, 1, 1}, [3]int{32, 1, 1}, 0, p, float32(1)), "parameter count"},
	} {
		switch {
		case tc.want == "" && tc.err != nil:
			t.Errorf("%s: %v", tc.name, tc.err)
		case tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, tc.err, tc.want)
		}
	}
	c.Free(p)
	if err := c.HtoD(p, unsafe.Pointer(&buf[0]), 8); err == nil {
		t.Error("HtoD into freed memory accepted")
	}
	if _, err := c.Alloc(8); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: %v, want ErrClosed", err)
	}
}
