//go:build fedcuda && fedcudaemu

package cuda

import "testing"

// With the build tag fedcudaemu the Backend tests run aggregate.cu's
// kernels on the CPU emulation (emu.cpp), so the backend's logic is checked
// against kernels.Reference on machines without a GPU:
//
//	go test -tags 'fedcuda fedcudaemu' -run Parity ./kernels/cuda
func init() { emulatedBackend = NewEmulatedBackend }

// TestSgemmKernelEmulated checks blas_sgemm (Sgemm without cuBLAS) on the
// CPU emulation.
func TestSgemmKernelEmulated(t *testing.T) {
	d := emuDevice{}
	checkGemmCases(t, d, func(ta, tb bool, m, n, k int, alpha float32, a cuPtr, lda int, sa int64, b cuPtr, ldb int, sb int64, beta float32, c cuPtr, ldc int, sc int64, batch int) error {
		return sgemmKernel(d, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch)
	})
}
