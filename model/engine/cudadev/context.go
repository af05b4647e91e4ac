//go:build fedcuda || fedcudaemu

package cudadev

import "github.com/fedtune/fedtune/kernels/cuda"

// The device runs on kernels/cuda's Context: one GPU in the GPU build
// (fedcuda), the CPU emulation of one in the fedcudaemu build, which runs
// train.cu compiled as C++ (kernels/cuda/emu.cpp) and Sgemm on its
// blas_sgemm kernel instead of cuBLAS.

// ErrNoDevice is kernels/cuda's error for a machine without a usable GPU;
// Open's error wraps it then.
var ErrNoDevice = cuda.ErrNoDevice

// ptr is a device address (byte arithmetic on it is plain addition).
type ptr = cuda.DevicePtr

// gpuContext is the GPU the device runs on.
type gpuContext = cuda.Context

func openContext(ordinal int) (*gpuContext, error) { return cuda.Open(ordinal) }

func init() {
	if cuda.Emulated {
		// The emulation runs a synchronising block's threads as fibers
		// in turn: keep the squared norm's grid small (the kernel is
		// grid-stride).
		sqnBlocks = 3
	}
}
