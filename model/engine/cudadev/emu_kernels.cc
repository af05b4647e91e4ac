//go:build fedcudaemu && !fedcuda

// emu_kernels.cc: kernels/cuda/train.cu compiled as C++ and run on the CPU,
// for testing package cudadev without a GPU (build tag fedcudaemu). The
// CUDA source is included unchanged; the few CUDA features it uses are
// emulated here:
//
//   - a block's threads are real OS threads (one per CUDA thread) for the
//     kernels that synchronise (__syncthreads, warp shuffles), so the
//     reductions run exactly as written; __shared__ variables are statics,
//     shared by the block's threads, and blocks run one after another;
//   - kernels without synchronisation run their threads one after another
//     on one OS thread (same results: they share nothing);
//   - __shfl_xor_sync exchanges through a per-warp slot array between two
//     per-warp barriers.
//
// emu_sgemm is a plain column-major SGEMM with cublasSgemm's meaning.

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

// Synchronisation state of the running block.
static std::barrier<>* emu_block_barrier;
static std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;
static double emu_slots[1024];

static void __syncthreads() {
    if (emu_block_barrier != nullptr) emu_block_barrier->arrive_and_wait();
}

template <class T>
static T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    unsigned t = threadIdx.x, warp = t / 32, lane = t % 32;
    std::barrier<>& b = *emu_warp_barriers[warp];
    emu_slots[t] = (double)v; // float and double both survive a double
    b.arrive_and_wait();
    T out = (T)emu_slots[warp * 32 + (lane ^ (unsigned)lane_mask)];
    b.arrive_and_wait();
    return out;
}

#include "emu_train.h" // a symbolic link to kernels/cuda/train.cu: as a header of this
                         // package it is part of the build cache key, so edits rebuild

// emu_run runs body for every thread of every block. sync kernels get one
// OS thread per CUDA thread and barriers.
static void emu_run(int grid, int block, bool sync, const std::function<void()>& body) {
    gridDim = dim3{(unsigned)grid, 1, 1};
    blockDim = dim3{(unsigned)block, 1, 1};
    if (!sync) {
        for (int b = 0; b < grid; b++) {
            for (int t = 0; t < block; t++) {
                blockIdx = dim3{(unsigned)b, 0, 0};
                threadIdx = dim3{(unsigned)t, 0, 0};
                body();
            }
        }
        return;
    }
    std::barrier<> all(block);
    emu_block_barrier = &all;
    emu_warp_barriers.clear();
    for (int w = 0; w < (block + 31) / 32; w++) emu_warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    std::vector<std::thread> threads;
    for (int t = 0; t < block; t++) {
        threads.emplace_back([&, t] {
            threadIdx = dim3{(unsigned)t, 0, 0};
            for (int b = 0; b < grid; b++) {
                blockIdx = dim3{(unsigned)b, 0, 0};
                body();
                all.arrive_and_wait(); // the next block reuses the statics
            }
        });
    }
    for (auto& th : threads) th.join();
    emu_block_barrier = nullptr;
}

static float f32(uint64_t v) {
    uint32_t b = (uint32_t)v;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
}

#define P(T, i) ((T)(uintptr_t)a[i])
#define I(i) ((int)(int32_t)(uint32_t)a[i])
#define F(i) f32(a[i])

extern "C" int emu_launch(const char* name, int grid, int block, const uint64_t* a, int nargs) {
    struct entry {
        const char* name;
        int nargs;
        bool sync;
        std::function<void(const uint64_t*)> call;
    };
    static const entry table[] = {
        {"train_embed", 5, false, [](const uint64_t* a) { train_embed(P(float*, 0), P(const float*, 1), P(const int*, 2), I(3), I(4)); }},
        {"train_embed_backward", 5, false, [](const uint64_t* a) { train_embed_backward(P(float*, 0), P(const float*, 1), P(const int*, 2), I(3), I(4)); }},
        {"train_rmsnorm", 7, true, [](const uint64_t* a) { train_rmsnorm(P(float*, 0), P(float*, 1), P(const float*, 2), P(const float*, 3), I(4), I(5), F(6)); }},
        {"train_rmsnorm_backward_dx", 7, true, [](const uint64_t* a) {
             train_rmsnorm_backward_dx(P(float*, 0), P(const float*, 1), P(const float*, 2), P(const float*, 3), P(const float*, 4), I(5), I(6));
         }},
        {"train_rmsnorm_backward_dw", 6, true, [](const uint64_t* a) {
             train_rmsnorm_backward_dw(P(float*, 0), P(const float*, 1), P(const float*, 2), P(const float*, 3), I(4), I(5));
         }},
        {"train_rope", 8, false, [](const uint64_t* a) {
             train_rope(P(float*, 0), P(const float*, 1), P(const float*, 2), I(3), I(4), I(5), I(6), F(7));
         }},
        {"train_split_heads", 7, false, [](const uint64_t* a) { train_split_heads(P(float*, 0), P(const float*, 1), I(2), I(3), I(4), I(5), I(6)); }},
        {"train_merge_heads", 7, false, [](const uint64_t* a) { train_merge_heads(P(float*, 0), P(const float*, 1), I(2), I(3), I(4), I(5), I(6)); }},
        {"train_causal_softmax", 4, true, [](const uint64_t* a) { train_causal_softmax(P(float*, 0), P(const float*, 1), I(2), I(3)); }},
        {"train_causal_softmax_backward", 5, true, [](const uint64_t* a) {
             train_causal_softmax_backward(P(float*, 0), P(const float*, 1), P(const float*, 2), I(3), I(4));
         }},
        {"train_swiglu", 4, false, [](const uint64_t* a) { train_swiglu(P(float*, 0), P(const float*, 1), P(const float*, 2), I(3)); }},
        {"train_swiglu_backward", 6, false, [](const uint64_t* a) {
             train_swiglu_backward(P(float*, 0), P(float*, 1), P(const float*, 2), P(const float*, 3), P(const float*, 4), I(5));
         }},
        {"train_mul", 4, false, [](const uint64_t* a) { train_mul(P(float*, 0), P(const float*, 1), P(const float*, 2), I(3)); }},
        {"train_axpy", 4, false, [](const uint64_t* a) { train_axpy(P(float*, 0), F(1), P(const float*, 2), I(3)); }},
        {"train_cross_entropy", 7, true, [](const uint64_t* a) {
             train_cross_entropy(P(float*, 0), P(float*, 1), P(const float*, 2), P(const int*, 3), I(4), I(5), F(6));
         }},
        {"train_sqnorm_partial", 3, true, [](const uint64_t* a) { train_sqnorm_partial(P(double*, 0), P(const float*, 1), I(2)); }},
        {"train_sqnorm_final", 3, true, [](const uint64_t* a) { train_sqnorm_final(P(double*, 0), P(const double*, 1), I(2)); }},
        {"train_adamw", 14, false, [](const uint64_t* a) {
             train_adamw(P(float*, 0), P(const float*, 1), P(float*, 2), P(float*, 3), I(4), F(5), F(6), F(7), F(8), F(9), F(10), F(11), I(12), F(13));
         }},
    };
    for (const entry& e : table) {
        if (std::strcmp(e.name, name) != 0) continue;
        if (nargs != e.nargs) return 2;
        if (block % 32 != 0 && e.sync) return 3;
        if (block > 1024 || grid < 1 || block < 1) return 4;
        emu_run(grid, block, e.sync, [&] { e.call(a); });
        return 0;
    }
    return 1;
}

// emu_sgemm is cublasSgemm (column-major): C = alpha·op(A)·op(B) + beta·C
// with op(A) m×k, op(B) k×n; beta == 0 overwrites C.
extern "C" void emu_sgemm(int transA, int transB, int m, int n, int k, float alpha, const float* A, int lda,
                          const float* B, int ldb, float beta, float* C, int ldc) {
    for (int j = 0; j < n; j++) {
        for (int i = 0; i < m; i++) {
            float acc = 0.0f;
            for (int l = 0; l < k; l++) {
                float x = transA ? A[l + (size_t)i * lda] : A[i + (size_t)l * lda];
                float y = transB ? B[j + (size_t)l * ldb] : B[l + (size_t)j * ldb];
                acc += x * y;
            }
            float* c = &C[i + (size_t)j * ldc];
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        }
    }
}
