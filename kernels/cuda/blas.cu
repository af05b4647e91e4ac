// Kernels behind Context.Sgemm when cuBLAS is missing (package kernels/cuda).
// Compiled by `make kernels` like every .cu file here; names start with
// blas_. The multiply-adds are explicit (__fmaf_rn), so --fmad=false does
// not slow them.

// blas_sgemm is the matrix product Context.Sgemm falls back to when no cuBLAS
// library can be loaded: C = alpha·op(A)·op(B) + beta·C, column-major, as
// cublasSgemmStridedBatched defines it (op(X) = Xᵀ when the trans flag is
// set; batch products, the i-th at A + i·sa, B + i·sb, C + i·sc; C is not
// read when beta is 0). FP32 with fused multiply-adds, like cuBLAS (the
// results agree to rounding, not bit for bit). One block
// of 256 threads per 16×16 tile of C; tiles of op(A) and op(B) staged in
// shared memory.
#define BLAS_TILE 16
extern "C" __global__ void blas_sgemm(int ta, int tb, int m, int n, int k, float alpha,
                                     const float *a, int lda, long long sa,
                                     const float *b, int ldb, long long sb, float beta,
                                     float *c, int ldc, long long sc, int batch) {
    __shared__ float as[BLAS_TILE][BLAS_TILE + 1];
    __shared__ float bs[BLAS_TILE][BLAS_TILE + 1];
    int tx = threadIdx.x % BLAS_TILE, ty = threadIdx.x / BLAS_TILE;
    long long tm = (m + BLAS_TILE - 1) / BLAS_TILE, tn = (n + BLAS_TILE - 1) / BLAS_TILE;
    long long per = tm * tn, total = per * batch;
    for (long long t = blockIdx.x; t < total; t += gridDim.x) {
        long long bi = t / per, r = t % per;
        int i0 = (int)(r % tm) * BLAS_TILE, j0 = (int)(r / tm) * BLAS_TILE;
        const float *ab = a + bi * sa;
        const float *bb = b + bi * sb;
        float *cb = c + bi * sc;
        int i = i0 + tx, j = j0 + ty;
        float acc = 0.0f;
        for (int l0 = 0; l0 < k; l0 += BLAS_TILE) {
            int l = l0 + ty; // as[ty][tx] = op(A)(i0+tx, l0+ty)
            as[ty][tx] = (i < m && l < k) ? (ta ? ab[l + (long long)i * lda] : ab[i + (long long)l * lda]) : 0.0f;
            l = l0 + tx; // bs[ty][tx] = op(B)(l0+tx, j0+ty)
            bs[ty][tx] = (l < k && j < n) ? (tb ? bb[j + (long long)l * ldb] : bb[l + (long long)j * ldb]) : 0.0f;
            __syncthreads();
            for (int q = 0; q < BLAS_TILE; q++) acc = __fmaf_rn(as[q][tx], bs[ty][q], acc);
            __syncthreads();
        }
        if (i < m && j < n) {
            long long ci = i + (long long)j * ldc;
            float v = __fmul_rn(alpha, acc);
            cb[ci] = beta == 0.0f ? v : __fmaf_rn(beta, cb[ci], v);
        }
    }
}
