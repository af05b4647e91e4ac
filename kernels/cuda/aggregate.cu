// Aggregation kernels of fedtune's GPU backend (package kernels/cuda).
//
// Every kernel gives the bits kernels.Reference gives: each multiplication
// and addition is written with an explicitly rounded intrinsic
// (__dmul_rn, __dadd_rn, __fmul_rn, __fdiv_rn, ...), which the compiler never
// contracts into a fused multiply-add, and the file is compiled with
// --fmad=false as a second guard. Subnormals are kept (no -ftz), and
// reductions run in the order the kernels.Backend contract fixes.
//
// Compile with `make kernels` (nvcc -ptx -arch=compute_70 --fmad=false -O3);
// the PTX in ptx/aggregate.ptx is committed and embedded in the Go package.
// Every kernel is extern "C" and its name starts with agg_.

#include <stdint.h>

#define AGG_READ_ACC 1   // start from acc[i] (else from +0)
#define AGG_WRITE_ACC 2  // write the float64 sum back to acc[i]
#define AGG_WRITE_DST 4  // write float32(acc*s) to dst[i]
#define AGG_VECTOR 8     // every x pointer is 16-byte aligned: load float4

// One term of agg_wsum16: a += w·x, product rounded to float64, then the sum.
#define AGG_TERM(a, wj, v) a = __dadd_rn(a, __dmul_rn(wj, (double)(v)))

#define AGG_TERM4(J)                                                   \
    if (J < k) {                                                       \
        float4 v = *reinterpret_cast<const float4 *>(x##J + i);        \
        AGG_TERM(a0, w##J, v.x);                                       \
        AGG_TERM(a1, w##J, v.y);                                       \
        AGG_TERM(a2, w##J, v.z);                                       \
        AGG_TERM(a3, w##J, v.w);                                       \
    }

#define AGG_TERM1(J)                                                   \
    if (J < k) {                                                       \
        AGG_TERM(a0, w##J, x##J[i]);                                   \
    }

#define AGG_PARAMS16(T, p)                                             \
    T p##0, T p##1, T p##2, T p##3, T p##4, T p##5, T p##6, T p##7,    \
    T p##8, T p##9, T p##10, T p##11, T p##12, T p##13, T p##14, T p##15

#define AGG_EACH16(M)                                                  \
    M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)                            \
    M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)

// agg_wsum16 adds up to 16 weighted inputs per element, in input order:
// a = (flags & AGG_READ_ACC ? acc[i] : +0) + w0·x0[i] + w1·x1[i] + …, each
// term rounded as kernels.Backend.WeightedSum specifies. It then stores a
// to acc[i] and/or float32(a·s) to dst[i] as flags say. Inputs beyond k are
// ignored. Each thread handles four consecutive elements.
extern "C" __global__ void agg_wsum16(double *acc, float *dst, int flags, int k,
                                      long long n, double s,
                                      AGG_PARAMS16(const float *__restrict__, x),
                                      AGG_PARAMS16(double, w)) {
    long long stride = (long long)gridDim.x * blockDim.x * 4;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 4; i < n; i += stride) {
        if ((flags & AGG_VECTOR) && i + 4 <= n) {
            double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
            if (flags & AGG_READ_ACC) {
                a0 = acc[i];
                a1 = acc[i + 1];
                a2 = acc[i + 2];
                a3 = acc[i + 3];
            }
            AGG_EACH16(AGG_TERM4)
            if (flags & AGG_WRITE_ACC) {
                acc[i] = a0;
                acc[i + 1] = a1;
                acc[i + 2] = a2;
                acc[i + 3] = a3;
            }
            if (flags & AGG_WRITE_DST) {
                float4 r;
                r.x = __double2float_rn(__dmul_rn(a0, s));
                r.y = __double2float_rn(__dmul_rn(a1, s));
                r.z = __double2float_rn(__dmul_rn(a2, s));
                r.w = __double2float_rn(__dmul_rn(a3, s));
                *reinterpret_cast<float4 *>(dst + i) = r;
            }
            continue;
        }
        long long end = i + 4 < n ? i + 4 : n;
        for (long long e = i; e < end; e++) {
            long long i = e;
            double a0 = (flags & AGG_READ_ACC) ? acc[i] : 0.0;
            AGG_EACH16(AGG_TERM1)
            if (flags & AGG_WRITE_ACC) acc[i] = a0;
            if (flags & AGG_WRITE_DST) dst[i] = __double2float_rn(__dmul_rn(a0, s));
        }
    }
}

// agg_store writes float32(acc[i]·s) to dst[i].
extern "C" __global__ void agg_store(float *dst, const double *acc, double s, long long n) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        dst[i] = __double2float_rn(__dmul_rn(acc[i], s));
    }
}

// agg_scale multiplies x[i] by s in float32.
extern "C" __global__ void agg_scale(float *x, float s, long long n) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        x[i] = __fmul_rn(x[i], s);
    }
}

// agg_sqnorm_blocks writes, for each block b of `block` elements of x, the
// partial Σ float64(x[i])·float64(x[i]) added in index order from +0. One
// thread per block, so the order is the sequential one.
extern "C" __global__ void agg_sqnorm_blocks(double *out, const float *__restrict__ x,
                                             long long n, long long block) {
    long long nb = (n + block - 1) / block;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < nb; b += stride) {
        long long lo = b * block, hi = lo + block < n ? lo + block : n;
        double p = 0.0;
        for (long long i = lo; i < hi; i++) {
            double v = (double)x[i];
            p = __dadd_rn(p, __dmul_rn(v, v));
        }
        out[b] = p;
    }
}

// agg_pair_blocks writes, for each pair p = (pairs[2p], pairs[2p+1]) of
// rows of xs (row r starts at xs + r·ld) and each block b of `block`
// coordinates, the partial Σ t·t with t = float64(xs_i[c]) − float64(xs_j[c])
// added in coordinate order from +0, to out[p·nb + b].
extern "C" __global__ void agg_pair_blocks(double *out, const float *__restrict__ xs, long long ld,
                                           const int *__restrict__ pairs, int npairs,
                                           long long m, long long block) {
    long long nb = (m + block - 1) / block;
    long long total = nb * (long long)npairs;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        long long p = t / nb, b = t % nb;
        const float *xi = xs + (long long)pairs[2 * p] * ld;
        const float *xj = xs + (long long)pairs[2 * p + 1] * ld;
        long long lo = b * block, hi = lo + block < m ? lo + block : m;
        double acc = 0.0;
        for (long long c = lo; c < hi; c++) {
            double d = __dsub_rn((double)xi[c], (double)xj[c]);
            acc = __dadd_rn(acc, __dmul_rn(d, d));
        }
        out[t] = acc;
    }
}

// agg_key maps a float's bits to a key whose unsigned order is IEEE 754
// totalOrder; agg_unkey inverts it.
__device__ __forceinline__ unsigned int agg_key(unsigned int b) {
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float agg_unkey(unsigned int k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// agg_stat_finish turns the n sorted keys (at key[0], key[step], …) into the
// median (trim < 0) or the trimmed mean dropping trim values at each end.
__device__ float agg_stat_finish(const unsigned int *key, long long step, int n, int trim) {
    if (trim < 0) {
        if (n % 2 == 1) return agg_unkey(key[(long long)(n / 2) * step]);
        double a = (double)agg_unkey(key[(long long)(n / 2 - 1) * step]);
        double b = (double)agg_unkey(key[(long long)(n / 2) * step]);
        return __double2float_rn(__ddiv_rn(__dadd_rn(a, b), 2.0));
    }
    double s = 0.0;
    for (int r = trim; r < n - trim; r++) s = __dadd_rn(s, (double)agg_unkey(key[(long long)r * step]));
    return __double2float_rn(__ddiv_rn(s, (double)(n - 2 * trim)));
}

#define AGG_LOCAL_SORT 32

// agg_order_stat writes the coordinate-wise median (trim < 0) or trimmed
// mean (trim >= 0) of n rows (row r at xs + r·ld, m coordinates) to dst.
// Values are sorted by totalOrder with an insertion sort: in registers and
// local memory for n <= 32, else in place in xs (which it overwrites with
// the sorted keys).
extern "C" __global__ void agg_order_stat(float *dst, float *xs, long long ld, int n,
                                          long long m, int trim) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < m; c += stride) {
        if (n <= AGG_LOCAL_SORT) {
            unsigned int key[AGG_LOCAL_SORT];
            for (int r = 0; r < n; r++) {
                unsigned int v = agg_key(__float_as_uint(xs[(long long)r * ld + c]));
                int j = r;
                while (j > 0 && key[j - 1] > v) {
                    key[j] = key[j - 1];
                    j--;
                }
                key[j] = v;
            }
            dst[c] = agg_stat_finish(key, 1, n, trim);
        } else {
            unsigned int *key = reinterpret_cast<unsigned int *>(xs) + c;
            for (int r = 0; r < n; r++) {
                unsigned int v = agg_key(key[(long long)r * ld]);
                int j = r;
                while (j > 0 && key[(long long)(j - 1) * ld] > v) {
                    key[(long long)j * ld] = key[(long long)(j - 1) * ld];
                    j--;
                }
                key[(long long)j * ld] = v;
            }
            dst[c] = agg_stat_finish(key, ld, n, trim);
        }
    }
}

// agg_qscale writes scales[b] = max|x| over block b / 127 (float32
// division; NaNs skipped; 0 for an all-zero block). One warp per block.
extern "C" __global__ void agg_qscale(float *scales, const float *__restrict__ x, long long n,
                                      long long block) {
    long long nb = (n + block - 1) / block;
    long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    long long warps = (long long)gridDim.x * blockDim.x / 32;
    int lane = threadIdx.x % 32;
    for (long long b = warp; b < nb; b += warps) {
        long long lo = b * block, hi = lo + block < n ? lo + block : n;
        float m = 0.0f;
        for (long long i = lo + lane; i < hi; i += 32) {
            float a = fabsf(x[i]);
            if (a > m) m = a;
        }
        for (int off = 16; off > 0; off /= 2) {
            float o = __shfl_down_sync(0xffffffffu, m, off);
            if (o > m) m = o;
        }
        if (lane == 0) scales[b] = __fdiv_rn(m, 127.0f);
    }
}

// agg_round_half_away rounds to the nearest integer, ties away from zero,
// with exact operations only (x − trunc(x) is exact in float32).
__device__ __forceinline__ float agg_round_half_away(float x) {
    float t = truncf(x);
    if (fabsf(__fsub_rn(x, t)) >= 0.5f) t = __fadd_rn(t, copysignf(1.0f, x));
    return t;
}

// agg_quant writes q[i] = round-half-away(x[i] / scale) clamped to
// [-127, 127], 0 for a zero scale or a NaN quotient.
extern "C" __global__ void agg_quant(signed char *q, const float *__restrict__ x,
                                     const float *__restrict__ scales, long long n, long long block) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float scale = scales[i / block];
        signed char v = 0;
        if (scale != 0.0f) {
            float r = agg_round_half_away(__fdiv_rn(x[i], scale));
            if (r != r) {
                v = 0;
            } else if (r > 127.0f) {
                v = 127;
            } else if (r < -127.0f) {
                v = -127;
            } else {
                v = (signed char)(int)r;
            }
        }
        q[i] = v;
    }
}

// agg_dequant writes x[i] = float32(q[i]) · scales[i / block] (float32).
extern "C" __global__ void agg_dequant(float *x, const signed char *__restrict__ q,
                                       const float *__restrict__ scales, long long n, long long block) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        x[i] = __fmul_rn((float)q[i], scales[i / block]);
    }
}

// agg_first_nonfinite lowers *first to the smallest index i < n whose x[i]
// is NaN or ±Inf (exponent bits all ones).
extern "C" __global__ void agg_first_nonfinite(unsigned long long *first, const float *__restrict__ x,
                                               long long n) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if ((__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u) {
            atomicMin(first, (unsigned long long)i);
            return; // later indices of this thread are larger
        }
    }
}
