// Package cuda is fedtune's GPU plumbing and GPU aggregation backend, built
// only with the build tag "fedcuda" (GPU build) or "fedcudaemu" (CPU
// emulation, for tests); the default build sees this doc comment alone and
// never links the CUDA driver. The tag is not "cuda": that one also
// switches on Gorgonia's own CUDA engine in every package that imports
// gorgonia.org/gorgonia, which needs cuDNN headers and libraries and so
// does not build.
//
// It owns:
//
//   - Context: one GPU through the CUDA driver API (gorgonia.org/cu): the
//     device's primary context, one stream, the fedtune kernels (the PTX in
//     ptx/, generated from the .cu sources here by `make kernels`, embedded
//     in the binary and JIT-compiled by the driver for the GPU at hand) and
//     cuBLAS, which is loaded with dlopen at run time (libcublas.so.13, .12,
//     .11, then libcublas.so) so the binary links only libcuda.so.1 and is
//     not tied to one CUDA release. Every Context method makes the context
//     current on the calling OS thread (runtime.LockOSThread plus
//     cuCtxSetCurrent for the length of the call), so a Context can be used
//     from any goroutine.
//   - Backend: kernels.Backend on the GPU, registered as "cuda" in the
//     kernels registry. Every method gives the same bits as
//     kernels.Reference: the kernels in aggregate.cu keep every
//     multiplication and addition apart (compiled with --fmad=false and
//     written with explicitly rounded intrinsics) and reduce in the order the
//     kernels.Backend contract fixes.
//
// Testing: `go test -tags fedcuda ./kernels/cuda` on a machine with a GPU
// compares every Backend method with kernels.Reference byte for byte (and
// skips, saying why, without one). `go test -tags fedcudaemu ./kernels/cuda`
// runs the same tests with no CUDA at all (no gorgonia.org/cu, no CUDA
// headers, no libcuda; a C++ compiler only): Context is then a CPU
// emulation of one GPU (emu.go) whose Launch runs the kernels of
// aggregate.cu, blas.cu and train.cu compiled as host C++ over every
// thread of the grid (emu.cpp), which checks the Backend's chunking and the
// kernels' logic and arithmetic order, though not nvcc's code. It is
// fedtune's one CUDA emulator: model/engine/cudadev runs on it too
// (Emulated says which Context a build has). Backend and the
// shared plumbing (backend.go, common.go) build in both; context.go,
// blas.go, initguard.go and register.go need fedcuda, emu.go and emu.cpp
// are fedcudaemu without fedcuda (with both tags the build is the GPU
// one). DevicePtr is gorgonia.org/cu's DevicePtr in the GPU build and a C
// heap address in the emulation. The emulation registers no "cuda"
// kernels backend.
//
// gorgonia.org/cu's package init calls cuInit and exits the process when it
// fails (no GPU, no driver). This package defines cuInit itself (see
// initguard.go): the definition forwards to the driver's cuInit, records its
// result and reports success, so the process survives a machine without a
// GPU and Open returns that result as an error wrapping ErrNoDevice instead.
package cuda
