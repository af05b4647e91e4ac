//go:build fedcudaemu && !fedcuda

// emu.cpp runs the kernels of aggregate.cu, blas.cu and train.cu on the
// CPU, for testing the GPU backend's and model/engine/cudadev's logic on
// machines without a GPU (build tag fedcudaemu without fedcuda: no CUDA
// header or library is needed). A launch runs every CUDA thread of the
// grid to completion in turn, which is faithful for kernels whose threads
// do not wait for each other; those that do (warp shuffles, __syncthreads:
// agg_qscale, blas_sgemm and train.cu's row reductions) run each block's
// threads as fibers that meet at every shuffle and barrier.

// No fused multiply-add, whatever the target: each operation rounds.
#pragma GCC optimize("fp-contract=off")

#include "emu_cuda.h"

#include <ucontext.h>

#include <functional>
#include <vector>

thread_local emu_dim3 threadIdx, blockIdx;
emu_dim3 blockDim, gridDim;

#include "aggregate.cu"
#include "blas.cu"
#include "train.cu"

namespace {

void run_grid(const std::function<void()> &thread) {
    for (unsigned int b = 0; b < gridDim.x; b++) {
        for (unsigned int t = 0; t < blockDim.x; t++) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            thread();
        }
    }
}

// Blocks for kernels whose threads meet (warp shuffles, __syncthreads):
// the block's threads are fibers (ucontext) on this OS thread, resumed in
// rounds. A thread yields at every meeting point. A shuffle is a meeting of
// its warp: after a round every lane of a warp (which meet at the same
// shuffles) has reached it. __syncthreads is a meeting of the block: a
// thread there is not resumed until every thread still running is there
// too, so warps that shuffle more than others between two barriers (a
// reduction's second stage in warp 0 alone) do not break it. A
// shuffle is one meeting: each thread writes its value to this meeting's
// slot, yields, and reads its partner's; consecutive shuffles alternate
// between two sets of slots, so no thread overwrites a slot that another
// has still to read.
//
// The fibers are made once per launch (swapcontext and getcontext cost a
// system call each, for the signal mask) and run one block after another:
// a fiber that finishes its thread for one block waits for the next.
ucontext_t sched_ctx;
std::vector<ucontext_t> fiber_ctx;
std::vector<char> fiber_done;
std::vector<char> fiber_wait; // at __syncthreads, not resumed until all are
std::vector<char *> fiber_stack;
double shfl_slot[2][1024]; // float and double both survive a double
unsigned char shfl_phase[1024];
const std::function<void()> *fiber_fn;
constexpr size_t fiber_stack_bytes = 64 << 10;

void fiber_entry(int t) {
    for (;;) {
        shfl_phase[t] = 0;
        (*fiber_fn)();
        fiber_done[t] = 1;
        // Left suspended here after the last block; nothing lives on the
        // fiber's stack then, and the next launch makes a fresh context.
        swapcontext(&fiber_ctx[t], &sched_ctx);
    }
}

void fiber_yield() { swapcontext(&fiber_ctx[threadIdx.x], &sched_ctx); }

void run_grid_fibers(const std::function<void()> &thread) {
    unsigned int nt = blockDim.x;
    fiber_fn = &thread;
    fiber_ctx.resize(nt);
    fiber_done.resize(nt);
    fiber_wait.resize(nt);
    while (fiber_stack.size() < nt) fiber_stack.push_back(new char[fiber_stack_bytes]);
    for (unsigned int t = 0; t < nt; t++) {
        getcontext(&fiber_ctx[t]);
        fiber_ctx[t].uc_stack.ss_sp = fiber_stack[t];
        fiber_ctx[t].uc_stack.ss_size = fiber_stack_bytes;
        fiber_ctx[t].uc_link = &sched_ctx;
        makecontext(&fiber_ctx[t], (void (*)())fiber_entry, 1, (int)t);
    }
    for (unsigned int b = 0; b < gridDim.x; b++) {
        for (unsigned int t = 0; t < nt; t++) fiber_done[t] = fiber_wait[t] = 0;
        for (;;) {
            bool ran = false;
            for (unsigned int t = 0; t < nt; t++) {
                if (fiber_done[t] || fiber_wait[t]) continue;
                blockIdx = {b, 0, 0};
                threadIdx = {t, 0, 0};
                swapcontext(&sched_ctx, &fiber_ctx[t]);
                ran = true;
            }
            if (ran) continue;
            // Every thread left is at __syncthreads: release them.
            bool waiting = false;
            for (unsigned int t = 0; t < nt; t++) {
                waiting = waiting || fiber_wait[t];
                fiber_wait[t] = 0;
            }
            if (!waiting) break;
        }
    }
}

double f64(uint64_t v) {
    double d;
    std::memcpy(&d, &v, 8);
    return d;
}

float f32(uint64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

}  // namespace

float __shfl_down_sync(unsigned int, float v, int delta) {
    unsigned int t = threadIdx.x, lane = t % 32;
    double *slot = shfl_slot[shfl_phase[t]];
    shfl_phase[t] ^= 1;
    slot[t] = v;
    fiber_yield();
    return lane + delta < 32 ? (float)slot[t + delta] : v;
}

template <class T>
T __shfl_xor_sync(unsigned int, T v, int lane_mask) {
    unsigned int t = threadIdx.x, warp = t / 32, lane = t % 32;
    double *slot = shfl_slot[shfl_phase[t]];
    shfl_phase[t] ^= 1;
    slot[t] = (double)v;
    fiber_yield();
    return (T)slot[warp * 32 + (lane ^ (unsigned int)lane_mask)];
}
template float __shfl_xor_sync<float>(unsigned int, float, int);
template double __shfl_xor_sync<double>(unsigned int, double, int);

void __syncthreads() {
    fiber_wait[threadIdx.x] = 1;
    fiber_yield();
}

#define P(i, T) ((T)a[i])

#define I(i) ((int)(int32_t)(uint32_t)a[i])
#define F(i) f32(a[i])

// train_launch runs a kernel of train.cu, as fedtune_emu_launch does.
static int train_launch(const char *name, int block, const uint64_t *a, int n) {
    struct entry {
        const char *name;
        int nargs;
        bool sync; // its threads meet (shuffles, __syncthreads): run as fibers
        void (*call)(const uint64_t *a);
    };
    static const entry table[] = {
        {"train_embed", 5, false, [](const uint64_t *a) { train_embed(P(0, float *), P(1, const float *), P(2, const int *), I(3), I(4)); }},
        {"train_embed_backward", 5, false,
         [](const uint64_t *a) { train_embed_backward(P(0, float *), P(1, const float *), P(2, const int *), I(3), I(4)); }},
        {"train_rmsnorm", 7, true,
         [](const uint64_t *a) {
             train_rmsnorm(P(0, float *), P(1, float *), P(2, const float *), P(3, const float *), I(4), I(5), F(6));
         }},
        {"train_rmsnorm_backward_dx", 7, true,
         [](const uint64_t *a) {
             train_rmsnorm_backward_dx(P(0, float *), P(1, const float *), P(2, const float *), P(3, const float *),
                                       P(4, const float *), I(5), I(6));
         }},
        {"train_rmsnorm_backward_dw", 6, true,
         [](const uint64_t *a) {
             train_rmsnorm_backward_dw(P(0, float *), P(1, const float *), P(2, const float *), P(3, const float *), I(4),
                                       I(5));
         }},
        {"train_rope", 8, false,
         [](const uint64_t *a) {
             train_rope(P(0, float *), P(1, const float *), P(2, const float *), I(3), I(4), I(5), I(6), F(7));
         }},
        {"train_split_heads", 7, false,
         [](const uint64_t *a) { train_split_heads(P(0, float *), P(1, const float *), I(2), I(3), I(4), I(5), I(6)); }},
        {"train_merge_heads", 7, false,
         [](const uint64_t *a) { train_merge_heads(P(0, float *), P(1, const float *), I(2), I(3), I(4), I(5), I(6)); }},
        {"train_causal_softmax", 4, true,
         [](const uint64_t *a) { train_causal_softmax(P(0, float *), P(1, const float *), I(2), I(3)); }},
        {"train_causal_softmax_backward", 5, true,
         [](const uint64_t *a) {
             train_causal_softmax_backward(P(0, float *), P(1, const float *), P(2, const float *), I(3), I(4));
         }},
        {"train_swiglu", 4, false,
         [](const uint64_t *a) { train_swiglu(P(0, float *), P(1, const float *), P(2, const float *), I(3)); }},
        {"train_swiglu_backward", 6, false,
         [](const uint64_t *a) {
             train_swiglu_backward(P(0, float *), P(1, float *), P(2, const float *), P(3, const float *),
                                   P(4, const float *), I(5));
         }},
        {"train_mul", 4, false,
         [](const uint64_t *a) { train_mul(P(0, float *), P(1, const float *), P(2, const float *), I(3)); }},
        {"train_axpy", 4, false, [](const uint64_t *a) { train_axpy(P(0, float *), F(1), P(2, const float *), I(3)); }},
        {"train_cross_entropy", 7, true,
         [](const uint64_t *a) {
             train_cross_entropy(P(0, float *), P(1, float *), P(2, const float *), P(3, const int *), I(4), I(5), F(6));
         }},
        {"train_sqnorm_partial", 3, true,
         [](const uint64_t *a) { train_sqnorm_partial(P(0, double *), P(1, const float *), I(2)); }},
        {"train_sqnorm_final", 3, true,
         [](const uint64_t *a) { train_sqnorm_final(P(0, double *), P(1, const double *), I(2)); }},
        {"train_adamw", 14, false,
         [](const uint64_t *a) {
             train_adamw(P(0, float *), P(1, const float *), P(2, float *), P(3, float *), I(4), F(5), F(6), F(7), F(8),
                         F(9), F(10), F(11), I(12), F(13));
         }},
        {"train_scatter_rows", 6, false,
         [](const uint64_t *a) {
             train_scatter_rows(P(0, float *), P(1, const float *), P(2, const int *), I(3), I(4), I(5));
         }},
        {"train_cached_attention", 12, true,
         [](const uint64_t *a) {
             train_cached_attention(P(0, float *), P(1, const float *), P(2, const float *), P(3, const float *),
                                    P(4, const int *), P(5, float *), I(6), I(7), I(8), I(9), I(10), F(11));
         }},
    };
    for (const entry &e : table) {
        if (std::strcmp(e.name, name) != 0) continue;
        if (n != e.nargs) return 1;
        if (e.sync) {
            if (block % 32 != 0 || block > 1024) return 2;
            run_grid_fibers([&] { e.call(a); });
        } else {
            run_grid([&] { e.call(a); });
        }
        return 0;
    }
    return 1;
}

// The kernels fedtune_emu_launch runs.
static const char *const emu_kernels[] = {
    "agg_wsum16", "agg_store", "agg_scale", "agg_sqnorm_blocks", "agg_pair_blocks", "agg_order_stat",
    "agg_qscale", "agg_quant", "agg_dequant", "agg_first_nonfinite", "blas_sgemm",
    "train_embed", "train_embed_backward", "train_rmsnorm", "train_rmsnorm_backward_dx", "train_rmsnorm_backward_dw",
    "train_rope", "train_split_heads", "train_merge_heads", "train_causal_softmax", "train_causal_softmax_backward",
    "train_swiglu", "train_swiglu_backward", "train_mul", "train_axpy", "train_cross_entropy", "train_sqnorm_partial",
    "train_sqnorm_final", "train_adamw", "train_scatter_rows", "train_cached_attention", nullptr,
};

// fedtune_emu_kernel returns the i-th kernel's name, NULL past the last.
extern "C" const char *fedtune_emu_kernel(int i) { return emu_kernels[i]; }

// fedtune_emu_launch runs kernel name over a one-dimensional grid with the
// n arguments in a (8-byte slots). It returns 0 when done, 1 for a name it
// does not know or the wrong number of arguments, 2 for a block size the
// kernel cannot run with.

extern "C" int fedtune_emu_launch(const char *name, int grid, int block, const uint64_t *a, int n) {
    gridDim = {(unsigned int)grid, 1, 1};
    blockDim = {(unsigned int)block, 1, 1};
    if (!std::strcmp(name, "agg_wsum16") && n == 38) {
        run_grid([&] {
            agg_wsum16(P(0, double *), P(1, float *), (int)a[2], (int)a[3], (long long)a[4], f64(a[5]),
                       P(6, const float *), P(7, const float *), P(8, const float *), P(9, const float *),
                       P(10, const float *), P(11, const float *), P(12, const float *), P(13, const float *),
                       P(14, const float *), P(15, const float *), P(16, const float *), P(17, const float *),
                       P(18, const float *), P(19, const float *), P(20, const float *), P(21, const float *),
                       f64(a[22]), f64(a[23]), f64(a[24]), f64(a[25]), f64(a[26]), f64(a[27]), f64(a[28]),
                       f64(a[29]), f64(a[30]), f64(a[31]), f64(a[32]), f64(a[33]), f64(a[34]), f64(a[35]),
                       f64(a[36]), f64(a[37]));
        });
    } else if (!std::strcmp(name, "agg_store") && n == 4) {
        run_grid([&] { agg_store(P(0, float *), P(1, const double *), f64(a[2]), (long long)a[3]); });
    } else if (!std::strcmp(name, "agg_scale") && n == 3) {
        run_grid([&] { agg_scale(P(0, float *), f32(a[1]), (long long)a[2]); });
    } else if (!std::strcmp(name, "agg_sqnorm_blocks") && n == 4) {
        run_grid([&] { agg_sqnorm_blocks(P(0, double *), P(1, const float *), (long long)a[2], (long long)a[3]); });
    } else if (!std::strcmp(name, "agg_pair_blocks") && n == 7) {
        run_grid([&] {
            agg_pair_blocks(P(0, double *), P(1, const float *), (long long)a[2], P(3, const int *), (int)a[4],
                            (long long)a[5], (long long)a[6]);
        });
    } else if (!std::strcmp(name, "agg_order_stat") && n == 6) {
        run_grid([&] {
            agg_order_stat(P(0, float *), P(1, float *), (long long)a[2], (int)a[3], (long long)a[4], (int)a[5]);
        });
    } else if (!std::strcmp(name, "agg_qscale") && n == 4) {
        if (block % 32 != 0 || block > 1024) return 2;
        run_grid_fibers([&] { agg_qscale(P(0, float *), P(1, const float *), (long long)a[2], (long long)a[3]); });
    } else if (!std::strcmp(name, "agg_quant") && n == 5) {
        run_grid([&] {
            agg_quant(P(0, signed char *), P(1, const float *), P(2, const float *), (long long)a[3], (long long)a[4]);
        });
    } else if (!std::strcmp(name, "agg_dequant") && n == 5) {
        run_grid([&] {
            agg_dequant(P(0, float *), P(1, const signed char *), P(2, const float *), (long long)a[3], (long long)a[4]);
        });
    } else if (!std::strcmp(name, "agg_first_nonfinite") && n == 3) {
        run_grid([&] { agg_first_nonfinite(P(0, unsigned long long *), P(1, const float *), (long long)a[2]); });
    } else if (!std::strcmp(name, "blas_sgemm") && n == 17) {
        if (block > 1024) return 2;
        run_grid_fibers([&] {
            blas_sgemm((int)a[0], (int)a[1], (int)a[2], (int)a[3], (int)a[4], f32(a[5]), P(6, const float *),
                       (int)a[7], (long long)a[8], P(9, const float *), (int)a[10], (long long)a[11], f32(a[12]),
                       P(13, float *), (int)a[14], (long long)a[15], (int)a[16]);
        });
    } else {
        return train_launch(name, block, a, n);
    }
    return 0;
}
