// Package cuda is fedtune's GPU plumbing and GPU aggregation backend, built
// only with the build tag "fedcuda" (every other file of the package carries
// it; the default build sees this doc comment alone and never links the CUDA
// driver). The tag is not "cuda": that one also switches on Gorgonia's own
// CUDA engine in every package that imports gorgonia.org/gorgonia, which
// needs cuDNN headers and libraries and so does not build.
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
// skips, saying why, without one). With the extra tag fedcudaemu the same
// parity tests run the kernels of aggregate.cu compiled as host C++ on a
// CPU emulation of the launch grid (emu.cpp), which checks the kernels'
// logic and arithmetic order without a GPU (it still needs the CUDA headers
// and libcuda.so.1 to build and start, like every fedcuda binary).
//
// gorgonia.org/cu's package init calls cuInit and exits the process when it
// fails (no GPU, no driver). This package defines cuInit itself (see
// initguard.go): the definition forwards to the driver's cuInit, records its
// result and reports success, so the process survives a machine without a
// GPU and Open returns that result as an error wrapping ErrNoDevice instead.
package cuda
