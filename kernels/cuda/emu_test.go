//go:build fedcuda && fedcudaemu

package cuda

// With the build tag fedcudaemu the Backend tests run aggregate.cu's
// kernels on the CPU emulation (emu.cpp), so the backend's logic is checked
// against kernels.Reference on machines without a GPU:
//
//	go test -tags 'fedcuda fedcudaemu' -run Parity ./kernels/cuda
func init() { emulatedBackend = NewEmulatedBackend }
