// emu_cuda.h lets aggregate.cu, blas.cu and train.cu compile as host C++ for emu.cpp (build tag
// fedcudaemu): CUDA's qualifiers become nothing, the rounded intrinsics
// become plain IEEE operations (compiled with -ffp-contract=off, so never
// fused), and the thread indices are per-OS-thread variables that the
// emulator's launcher sets before it runs each CUDA thread.
#ifndef FEDTUNE_EMU_CUDA_H
#define FEDTUNE_EMU_CUDA_H

#include <cmath>
#include <cstdint>
#include <cstring>

struct emu_dim3 {
    unsigned int x, y, z;
};

extern thread_local emu_dim3 threadIdx, blockIdx;
extern emu_dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static // one block runs at a time

struct alignas(16) float4 {
    float x, y, z, w;
};

static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __double2float_rn(double d) { return (float)d; }
static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
#include <math.h> // copysignf, fabsf, truncf as CUDA spells them

static inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) {
    unsigned long long old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}

float __shfl_down_sync(unsigned int mask, float v, int delta);
template <class T>
T __shfl_xor_sync(unsigned int mask, T v, int lane_mask);
void __syncthreads();

#endif
