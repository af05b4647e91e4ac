//go:build fedcuda && fedcudaemu

// emu.cpp runs the kernels of aggregate.cu on the CPU, for testing the GPU
// backend's logic on machines without a GPU (build tag fedcudaemu). A launch
// runs every CUDA thread of the grid to completion in turn, which is
// faithful for kernels whose threads do not wait for each other; the one
// that does (agg_qscale, with warp shuffles) runs each warp's 32 lanes on
// 32 OS threads that meet at a barrier for every shuffle.

// No fused multiply-add, whatever the target: each operation rounds.
#pragma GCC optimize("fp-contract=off")

#include "emu_cuda.h"

#include <barrier>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

thread_local emu_dim3 threadIdx, blockIdx;
emu_dim3 blockDim, gridDim;

#include "aggregate.cu"

namespace {

// One warp's lanes for kernels with shuffles.
std::barrier<> *shfl_bar;
float shfl_slot[32];

void run_grid(const std::function<void()> &thread) {
    for (unsigned int b = 0; b < gridDim.x; b++) {
        for (unsigned int t = 0; t < blockDim.x; t++) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            thread();
        }
    }
}

void run_grid_warps(const std::function<void()> &thread) {
    std::barrier<> bar(32);
    shfl_bar = &bar;
    for (unsigned int b = 0; b < gridDim.x; b++) {
        for (unsigned int w = 0; w < blockDim.x / 32; w++) {
            std::vector<std::thread> lanes;
            for (unsigned int l = 0; l < 32; l++) {
                lanes.emplace_back([&, b, w, l] {
                    blockIdx = {b, 0, 0};
                    threadIdx = {w * 32 + l, 0, 0};
                    thread();
                });
            }
            for (auto &l : lanes) l.join();
        }
    }
    shfl_bar = nullptr;
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
    unsigned int lane = threadIdx.x % 32;
    shfl_slot[lane] = v;
    shfl_bar->arrive_and_wait();
    float r = lane + delta < 32 ? shfl_slot[lane + delta] : v;
    shfl_bar->arrive_and_wait();
    return r;
}

#define P(i, T) ((T)a[i])

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
        if (block % 32 != 0) return 2;
        run_grid_warps([&] { agg_qscale(P(0, float *), P(1, const float *), (long long)a[2], (long long)a[3]); });
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
    } else {
        return 1;
    }
    return 0;
}
