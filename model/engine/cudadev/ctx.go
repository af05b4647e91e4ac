//go:build fedcuda || fedcudaemu

package cudadev

import "unsafe"

// The calls below are the whole surface of kernels/cuda that the device
// uses.

func (d *Device) alloc(bytes int) (ptr, error) { return d.ctx.Alloc(int64(bytes)) }

func (d *Device) free(p ptr) error {
	d.ctx.Free(p)
	return nil
}

func (d *Device) memset(p ptr, bytes int) {
	if d.err == nil {
		d.fail(d.ctx.Memset(p, int64(bytes)))
	}
}

func (d *Device) htod(dst ptr, src unsafe.Pointer, bytes int) error {
	return d.ctx.HtoD(dst, src, int64(bytes))
}

func (d *Device) dtoh(dst unsafe.Pointer, src ptr, bytes int) error {
	return d.ctx.DtoH(dst, src, int64(bytes))
}

func (d *Device) dtod(dst, src ptr, bytes int) error { return d.ctx.DtoD(dst, src, int64(bytes)) }

func (d *Device) sync() error { return d.ctx.Sync() }

func (d *Device) launchKernel(name string, grid, block [3]int, args ...any) error {
	return d.ctx.Launch(name, grid, block, 0, args...)
}

// sgemm is cublasSgemm_v2 (column-major).
func (d *Device) sgemm(transA, transB bool, m, n, k int, alpha float32, a ptr, lda int, b ptr, ldb int,
	beta float32, c ptr, ldc int) error {
	return d.ctx.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// sgemmStridedBatched is cublasSgemmStridedBatched (column-major; strides
// in elements).
func (d *Device) sgemmStridedBatched(transA, transB bool, m, n, k int, alpha float32, a ptr, lda, strideA int,
	b ptr, ldb, strideB int, beta float32, c ptr, ldc, strideC, batch int) error {
	return d.ctx.SgemmStridedBatched(transA, transB, m, n, k, alpha, a, lda, int64(strideA), b, ldb, int64(strideB),
		beta, c, ldc, int64(strideC), batch)
}
