//go:build fedcuda

package cudadev

import (
	"gorgonia.org/cu"

	"github.com/fedtune/fedtune/kernels/cuda"
)

// ErrNoDevice is kernels/cuda's error for a machine without a usable GPU;
// Open's error wraps it then.
var ErrNoDevice = cuda.ErrNoDevice

// ptr is a device address (byte arithmetic on it is plain addition).
type ptr = cu.DevicePtr

// gpuContext is the GPU the device runs on.
type gpuContext = cuda.Context

func openContext(ordinal int) (*gpuContext, error) { return cuda.Open(ordinal) }
