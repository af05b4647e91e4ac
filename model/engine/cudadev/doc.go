// Package cudadev is the CUDA implementation of engine.Device, built only
// with the build tag "fedcuda" (this doc comment is all the default build
// sees, so the default build never links the CUDA driver). The tag is not
// "cuda": under that one Gorgonia, which model/gorgoniaref imports (and
// the trainer, for its gorgonia device, and these tests, as their
// reference), switches to its own cuDNN engine and does not build.
//
// Open(ordinal) opens one GPU through package kernels/cuda's Context and
// returns an engine.Device whose Buffers are device allocations. Matrix
// products go to cuBLAS: a row-major product C = op(A)·op(B) is the
// column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ, so MatMul swaps the operands
// and M with N and hands cuBLAS the same buffers and row strides. Every
// other operation is one kernel of kernels/cuda/train.cu (names prefixed
// train_). No kernel uses atomics, so a step gives the same bits on every
// run on the same GPU; the element-wise AdamW gives the Host device's bits
// exactly, and the reductions agree with it to float32 rounding.
//
// The Device is also an engine.CacheDevice, so engine.Decoder and
// engine.Batcher (fedtune serve --device cuda) decode on it with a
// key/value cache: ScatterRows writes a step's keys and values into the
// cache (kernel train_scatter_rows; a repeated index gets its last row),
// CachedAttention runs one block per query row and head over its
// sequence's cache rows (train_cached_attention: the scores in float32,
// the softmax as CausalSoftmax computes it, the weighted values summed by
// groups of threads in a fixed order, no atomics), and PackWeight keeps no copy (cuBLAS reads the
// row-major weights as they are). Their logits agree with the Host's to
// float32 rounding, not bit for bit.
//
// Token ids and targets are checked on the host: WriteInt keeps a copy of
// what it uploads (ids are small), and Embed and CrossEntropy report an id
// outside the vocabulary, ScatterRows an index outside the cache and
// CachedAttention a span outside it, as the device's sticky error without
// launching anything. Operations run asynchronously on the Context's stream; Read,
// SquaredNorm and Sync wait for them.
//
// With the build tag "fedcudaemu" instead, the same device code runs on
// kernels/cuda's CPU emulation of one GPU (the one emulator, kernels/cuda's
// emu.cpp): train.cu compiled as C++, the threads of a block that
// synchronise run as fibers, host memory, and Sgemm on the blas_sgemm
// kernel in place of cuBLAS. It is slow and lets the tests here run where
// there is no GPU:
//
//	go test -tags fedcudaemu ./model/engine/cudadev ./trainer
//
// On a GPU machine, scripts/gpu-check.sh runs the real thing.
package cudadev
