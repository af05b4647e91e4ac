// train.cu: the non-GEMM operations of a LLaMA training step on the GPU,
// one kernel per engine.Device operation (model/engine/device.go states
// what each computes; model/engine/cudadev launches them), and the two of
// decoding with a key/value cache (engine.CacheDevice, host_cache.go).
// Matrix products go to cuBLAS instead.
//
// Every name starts with train_ so that it stays unique among the PTX
// modules of package cuda. Compiled by `make kernels` with
// nvcc -ptx -arch=compute_70 --fmad=false -O3 into ptx/train.ptx:
// --fmad=false keeps a*b+c as a rounded product then a rounded sum, as the
// Go reference computes it, so the element-wise kernels (AdamW above all)
// give the Host device's bits.
//
// Conventions: element counts are int (every buffer of a step is below
// 2^31 elements), offsets are computed in size_t. Element-wise kernels use
// grid-stride loops and work for any launch shape. Row kernels take one
// block per row (grid-stride over rows) and any block size that is a
// multiple of 32 up to 1024. No kernel uses atomics: every sum is taken in
// a fixed order, so a launch always gives the same bits.

#define FULL_MASK 0xffffffffu

// ---------------------------------------------------------------------------
// Reductions (fixed shuffle trees: deterministic).

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// block_sum_d returns the block-wide sum of v to every thread.
__device__ double block_sum_d(double v) {
    __shared__ double sh[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads(); // sh may still be read by a previous call
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double t = lane < nw ? sh[lane] : 0.0;
        t = warp_sum_d(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

// block_sum returns the block-wide float sum of v to every thread.
__device__ float block_sum(float v) {
    __shared__ float sh[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? sh[lane] : 0.0f;
        t = warp_sum(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

// block_max returns the block-wide maximum of v to every thread.
__device__ float block_max(float v) {
    __shared__ float sh[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nw ? sh[lane] : -INFINITY;
        t = warp_max(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

#define GRID_STRIDE(i, n)                                                        \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)(n); \
         i += (size_t)blockDim.x * gridDim.x)

// ---------------------------------------------------------------------------
// Embedding.

// out[r, j] = table[ids[r], j]; ids were checked against the vocabulary
// on the host.
extern "C" __global__ void train_embed(float* out, const float* table, const int* ids, int rows, int d) {
    GRID_STRIDE(i, (size_t)rows * d) {
        size_t r = i / d, j = i % d;
        out[i] = table[(size_t)ids[r] * d + j];
    }
}

// gtable[ids[r], j] += gout[r, j]: one thread per column j walks the rows
// in increasing r, so repeated ids add in a fixed order without atomics.
extern "C" __global__ void train_embed_backward(float* gtable, const float* gout, const int* ids, int rows, int d) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    for (int r = 0; r < rows; r++) {
        size_t at = (size_t)ids[r] * d + j;
        gtable[at] += gout[(size_t)r * d + j];
    }
}

// ---------------------------------------------------------------------------
// RMSNorm.

// y[r, :] = x[r, :]·rstd[r]·w, rstd[r] = 1/sqrt(mean(x[r, :]²) + eps), the
// mean accumulated in double.
extern "C" __global__ void train_rmsnorm(float* y, float* rstd, const float* x, const float* w, int rows, int d, float eps) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + (size_t)r * d;
        double ss = 0.0;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            double v = xr[j];
            ss += v * v;
        }
        ss = block_sum_d(ss);
        float rs = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
        if (threadIdx.x == 0) rstd[r] = rs;
        float* yr = y + (size_t)r * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * rs * w[j];
    }
}

// dx[r, j] += rstd·(dy·w − x·rstd²·c/d), c = Σ_j dy·w·x, all in double
// (the difference can cancel) and rounded once.
extern "C" __global__ void train_rmsnorm_backward_dx(float* dx, const float* dy, const float* x, const float* w,
                                                     const float* rstd, int rows, int d) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        size_t o = (size_t)r * d;
        double c = 0.0;
        for (int j = threadIdx.x; j < d; j += blockDim.x) c += (double)dy[o + j] * (double)w[j] * (double)x[o + j];
        c = block_sum_d(c);
        double rs = rstd[r];
        double k = rs * rs * c / (double)d;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            dx[o + j] += (float)(rs * ((double)dy[o + j] * (double)w[j] - (double)x[o + j] * k));
    }
}

// dw[j] += Σ_r dy[r, j]·x[r, j]·rstd[r] without atomics: a block of
// DW_SLICES×32 threads takes 32 columns; thread (s, c) sums rows s,
// s + DW_SLICES, … of its column in increasing order, then the slices are
// added in slice order. Launch with blockDim.x = 32·DW_SLICES and
// gridDim.x = ceil(d / 32).
#define DW_SLICES 8
extern "C" __global__ void train_rmsnorm_backward_dw(float* dw, const float* dy, const float* x, const float* rstd,
                                                     int rows, int d) {
    __shared__ float part[DW_SLICES][32];
    int c = threadIdx.x % 32, sl = threadIdx.x / 32;
    int j = blockIdx.x * 32 + c;
    float acc = 0.0f;
    if (j < d && sl < DW_SLICES) {
        for (int r = sl; r < rows; r += DW_SLICES) {
            size_t o = (size_t)r * d + j;
            acc += dy[o] * x[o] * rstd[r];
        }
    }
    if (sl < DW_SLICES) part[sl][c] = acc;
    __syncthreads();
    if (sl == 0 && j < d) {
        float sum = dw[j];
        for (int k = 0; k < DW_SLICES; k++) sum += part[k][c];
        dw[j] = sum;
    }
}

// ---------------------------------------------------------------------------
// Rotary embeddings (Hugging Face rotate-half), in place on
// x [rows, heads, hd]; cos, sin are [T, hd]. sign = −1 applies the inverse.

extern "C" __global__ void train_rope(float* x, const float* cos_t, const float* sin_t, int rows, int heads, int hd,
                                      int T, float sign) {
    int half = hd / 2;
    GRID_STRIDE(i, (size_t)rows * heads * half) {
        size_t j = i % half, rh = i / half;
        size_t t = (rh / heads) % T;
        float* p = x + rh * hd;
        float c = cos_t[t * hd + j], s = sign * sin_t[t * hd + j];
        float a = p[j], b = p[j + half];
        p[j] = a * c - b * s;
        p[j + half] = b * c + a * s;
    }
}

// ---------------------------------------------------------------------------
// Head layout.

// dst [B, heads·repeat, T, hd] ← src [B, T, heads, hd]; dst head h reads
// src head h/repeat.
extern "C" __global__ void train_split_heads(float* dst, const float* src, int B, int T, int heads, int hd, int repeat) {
    size_t H = (size_t)heads * repeat;
    GRID_STRIDE(i, (size_t)B * H * T * hd) {
        size_t e = i % hd, t = (i / hd) % T, hh = (i / ((size_t)hd * T)) % H, b = i / ((size_t)hd * T * H);
        dst[i] = src[((b * T + t) * heads + hh / repeat) * hd + e];
    }
}

// dst [B, T, heads, hd] = Σ_g src[b, h·repeat+g, t, :], g in order.
extern "C" __global__ void train_merge_heads(float* dst, const float* src, int B, int T, int heads, int hd, int repeat) {
    size_t H = (size_t)heads * repeat;
    GRID_STRIDE(i, (size_t)B * T * heads * hd) {
        size_t e = i % hd, h = (i / hd) % heads, t = (i / ((size_t)hd * heads)) % T, b = i / ((size_t)hd * heads * T);
        float acc = 0.0f;
        for (int g = 0; g < repeat; g++) acc += src[((b * H + h * repeat + g) * T + t) * hd + e];
        dst[i] = acc;
    }
}

// ---------------------------------------------------------------------------
// Causal softmax over rows of [rows, T]; row r is query position r mod T.
// One block per row. p may alias s: every thread reads and then writes
// only its own columns.

extern "C" __global__ void train_causal_softmax(float* p, const float* s, int rows, int T) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        size_t o = (size_t)r * T;
        int t = r % T;
        float m = -INFINITY;
        for (int j = threadIdx.x; j <= t; j += blockDim.x) m = fmaxf(m, s[o + j]);
        m = block_max(m);
        double z = 0.0;
        for (int j = threadIdx.x; j < T; j += blockDim.x) {
            float e = 0.0f;
            if (j <= t) {
                e = expf(s[o + j] - m);
                z += (double)e;
            }
            p[o + j] = e;
        }
        z = block_sum_d(z);
        double inv = 1.0 / z;
        for (int j = threadIdx.x; j <= t; j += blockDim.x) p[o + j] = (float)((double)p[o + j] * inv);
    }
}

// ds = p·(dp − Σ_k p·dp) for j ≤ t, 0 beyond, in double (dp − dot can
// cancel). ds may alias dp.
extern "C" __global__ void train_causal_softmax_backward(float* ds, const float* p, const float* dp, int rows, int T) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        size_t o = (size_t)r * T;
        int t = r % T;
        double dot = 0.0;
        for (int j = threadIdx.x; j <= t; j += blockDim.x) dot += (double)p[o + j] * (double)dp[o + j];
        dot = block_sum_d(dot);
        for (int j = threadIdx.x; j < T; j += blockDim.x)
            ds[o + j] = j <= t ? (float)((double)p[o + j] * ((double)dp[o + j] - dot)) : 0.0f;
    }
}

// ---------------------------------------------------------------------------
// Element-wise.

// The SwiGLU kernels work in double and round once, as the Go reference.
__device__ __forceinline__ double sigmoid_d(float x) { return 1.0 / (1.0 + exp(-(double)x)); }

// act = g·σ(g)·u.
extern "C" __global__ void train_swiglu(float* act, const float* g, const float* u, int n) {
    GRID_STRIDE(i, n) {
        float x = g[i];
        act[i] = (float)((double)x * sigmoid_d(x) * (double)u[i]);
    }
}

// dg = dact·u·σ(g)·(1 + g·(1 − σ(g))), du = dact·g·σ(g).
extern "C" __global__ void train_swiglu_backward(float* dg, float* du, const float* dact, const float* g, const float* u,
                                                 int n) {
    GRID_STRIDE(i, n) {
        float x = g[i];
        double s = sigmoid_d(x), gv = x, uv = u[i], da = dact[i];
        dg[i] = (float)(da * uv * s * (1.0 + gv * (1.0 - s)));
        du[i] = (float)(da * gv * s);
    }
}

// dst = a·b (dst may alias a or b).
extern "C" __global__ void train_mul(float* dst, const float* a, const float* b, int n) {
    GRID_STRIDE(i, n) { dst[i] = a[i] * b[i]; }
}

// y += alpha·x.
extern "C" __global__ void train_axpy(float* y, float alpha, const float* x, int n) {
    GRID_STRIDE(i, n) { y[i] += alpha * x[i]; }
}

// ---------------------------------------------------------------------------
// Cross-entropy: one block per row of logits [rows, V].
// loss[r] = logsumexp(logits[r, :]) − logits[r, target];
// dlogits[r, j] = scale·(softmax[j] − [j == target]). dlogits may alias
// logits: the target logit is read before any thread writes.

extern "C" __global__ void train_cross_entropy(float* loss, float* dlogits, const float* logits, const int* targets,
                                               int rows, int V, float scale) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        size_t o = (size_t)r * V;
        int tg = targets[r];
        float xt = logits[o + tg];
        float m = -INFINITY;
        for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, logits[o + j]);
        m = block_max(m);
        double z = 0.0;
        for (int j = threadIdx.x; j < V; j += blockDim.x) z += exp((double)(logits[o + j] - m));
        z = block_sum_d(z); // its barriers order every read of the row before the writes
        double lse = (double)m + log(z);
        if (threadIdx.x == 0) loss[r] = (float)(lse - (double)xt);
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            double pj = exp((double)logits[o + j] - lse);
            if (j == tg) pj -= 1.0;
            dlogits[o + j] = (float)((double)scale * pj);
        }
        __syncthreads(); // the next row's reads of shared reduction slots
    }
}

// ---------------------------------------------------------------------------
// Squared norm in double: a fixed grid writes one partial per block, then
// one block adds the partials in a fixed order.

extern "C" __global__ void train_sqnorm_partial(double* partial, const float* x, int n) {
    double acc = 0.0;
    GRID_STRIDE(i, n) {
        double v = x[i];
        acc += v * v;
    }
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

extern "C" __global__ void train_sqnorm_final(double* out, const double* partial, int nparts) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += partial[i];
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) out[0] = acc;
}

// ---------------------------------------------------------------------------
// AdamW, element by element in float32 exactly as the Go optimiser:
//   g' = g·clip; m = b1·m + (1−b1)·g'; v = b2·v + (1−b2)·g'·g';
//   if decay: w −= lr·wd·w;  w −= (lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps).

extern "C" __global__ void train_adamw(float* w, const float* g, float* m, float* v, int n, float clip, float lr,
                                       float b1, float b2, float bc1, float bc2, float eps, int decay, float wd) {
    float step = lr / bc1;
    float sqrt_bc2 = sqrtf(bc2);
    GRID_STRIDE(i, n) {
        float gi = g[i] * clip;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float wi = w[i];
        if (decay) wi -= lr * wd * wi;
        float den = sqrtf(vi) / sqrt_bc2 + eps;
        wi -= step * mi / den;
        w[i] = wi;
    }
}

// ---------------------------------------------------------------------------
// Decoding with a key/value cache (engine.CacheDevice).

// dst[idx[r], :] = src[r, :] for r < rows, dst being [n, d] (indices were
// checked against n on the host). When an index repeats only its last row
// is written, so the result does not depend on the order threads run in:
// the host passes from, the first row whose index occurs again below it
// (rows when none repeats), and only rows from there on look for a later
// one.
extern "C" __global__ void train_scatter_rows(float* dst, const float* src, const int* idx, int rows, int d, int from) {
    GRID_STRIDE(i, (size_t)rows * d) {
        size_t r = i / d, j = i % d;
        int to = idx[r];
        bool later = false;
        if ((int)r >= from)
            for (int k = (int)r + 1; k < rows && !later; k++) later = idx[k] == to;
        if (!later) dst[(size_t)to * d + j] = src[i];
    }
}

// Cached attention: one block per (query row r, head h) of q [rows, heads,
// hd], over its sequence's cache rows c … c+p of k and v [cacheRows,
// kvHeads, hd] (at[r] = {c, p}, checked on the host), head h reading
// key/value head g = h / (heads/kvHeads):
//
//   s_j = scale·q[r, h, :]·k[c+j, g, :] for j ≤ p   (float32, i in order)
//   m = max_j s_j;  e_j = expf(s_j − m);  z = Σ_j e_j in double
//   out[r, h, i] = Σ_{j ≤ p} (e_j·(float)(1/z))·v[c+j, g, i]  (j in order)
//
// the softmax as train_causal_softmax and the Host's CausalSoftmax compute
// it (the sum over j in position order when hd·2 > blockDim, else split
// into groups of positions j ≡ g (mod groups) added in group order).
// scratch holds each unit's scores and then its e_j, a row of stride long
// (≥ p+1) per unit of this launch; the launch covers rows r0 … r0+rows−1
// (q, out and at already offset to r0), units beyond gridDim.x by grid
// stride. Block size: a multiple of 32, at most 1024.
#define ATTN_PART 1024
extern "C" __global__ void train_cached_attention(float* out, const float* q, const float* k, const float* v,
                                                  const int* at, float* scratch, int rows, int heads, int kv_heads,
                                                  int hd, int long_, float scale) {
    __shared__ float part[ATTN_PART];
    int rep = heads / kv_heads;
    size_t w = (size_t)kv_heads * hd;
    // With heads narrower than the block, groups of hd threads share the
    // weighted sum of the values (at most ATTN_PART partial sums).
    int groups = hd * 2 <= (int)blockDim.x ? (int)blockDim.x / hd : 1;
    if (groups * hd > ATTN_PART) groups = ATTN_PART / hd;
    for (int u = blockIdx.x; u < rows * heads; u += gridDim.x) {
        int r = u / heads, h = u % heads, g = h / rep;
        size_t c = (size_t)at[2 * r];
        int n = at[2 * r + 1] + 1;
        const float* qv = q + (size_t)u * hd;
        const float* kb = k + c * w + (size_t)g * hd;
        const float* vb = v + c * w + (size_t)g * hd;
        float* s = scratch + (size_t)u * long_;
        float m = -INFINITY;
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            const float* kv = kb + (size_t)j * w;
            float dot = 0.0f;
            for (int i = 0; i < hd; i++) dot += qv[i] * kv[i];
            float sj = scale * dot;
            s[j] = sj;
            m = fmaxf(m, sj);
        }
        m = block_max(m);
        double z = 0.0;
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            float e = expf(s[j] - m);
            s[j] = e;
            z += (double)e;
        }
        z = block_sum_d(z); // its barriers make every s[j] visible to the block
        float inv = (float)(1.0 / z);
        float* o = out + (size_t)u * hd;
        if (groups == 1) {
            for (int i = threadIdx.x; i < hd; i += blockDim.x) {
                float acc = 0.0f;
                for (int j = 0; j < n; j++) acc += (s[j] * inv) * vb[(size_t)j * w + i];
                o[i] = acc;
            }
        } else {
            // Thread (gi, i) sums positions gi, gi + groups, … of column i;
            // then thread i adds the groups' sums in group order.
            int gi = threadIdx.x / hd, i = threadIdx.x % hd;
            if (gi < groups) {
                float acc = 0.0f;
                for (int j = gi; j < n; j += groups) acc += (s[j] * inv) * vb[(size_t)j * w + i];
                part[gi * hd + i] = acc;
            }
            __syncthreads();
            if (threadIdx.x < hd) {
                float acc = 0.0f;
                for (int g2 = 0; g2 < groups; g2++) acc += part[g2 * hd + threadIdx.x];
                o[threadIdx.x] = acc;
            }
        }
        __syncthreads(); // s and part are read above before the next unit's writes
    }
}
