// Package engine runs the LLaMA training step of package model on a
// Device: a small set of primitive operations (GEMM, embedding
// gather/scatter, RMSNorm, RoPE, head split/merge, causal softmax, SwiGLU,
// cross-entropy, AdamW, each forward and backward) on buffers that live in
// the device's memory.
//
// It owns:
//   - the Device interface (device.go), the seam between the training step
//     and the hardware;
//   - Host (NewHost), the plain-Go Device that is the reference every other
//     Device is tested against (package enginetest holds that conformance
//     suite);
//   - Trainer (NewTrainer), the training step written only against Device:
//     weights, gradients, AdamW moments and activations stay resident on the
//     device between steps, and only token ids, dropout masks and per-row
//     losses cross per step. It computes what model/gorgoniaref's Gorgonia
//     Trainer computes (same batches, loss, clipping, schedule, AdamW, LoRA
//     dropout stream), and is tested against it. StepBatch takes a
//     model.Batch: the loss Σ w·ℓ / Σ w with the gradient scaled alike,
//     attention that stays within each document of a packed window (a
//     mask added to the scores before the causal softmax) and rotary
//     positions restarting per document (per-row rotary tables); it uses
//     only Device operations, so every Device runs it. A packed window
//     gives the loss and gradients of its documents run alone (tested);
//   - Runner (NewRunner), fedtune's one forward pass for inference: the
//     Trainer's forward on a Device, weights uploaded once, activations
//     sized to each sequence (no key/value cache: each generated token runs
//     the sequence again). Evaluate, EvaluateMasked and Generate run
//     model's Evaluate, EvaluateMasked and Generate on it; eval, generate and the coordinator's held-out
//     evaluation use them on the Host.
//
// Host is also the fast CPU path: products go to the BLAS a build tag
// installs (OpenBLAS, made single-threaded and split over the Host's
// pool), else to its own blocked sgemm with AVX2 or AVX-512 micro-kernels
// (gemm.go, gemm_amd64.s), else to gonum; exp-heavy rows run in AVX2 loops
// (vexp_amd64.s, vec_amd64.s) and large operations spread over one
// persistent worker pool (package kernels' Job). Work is split only over independent
// outputs, so results are identical for any number of cores; the build tag
// purego forces the pure-Go loops.
//
// The CUDA Device lives in the cudadev subpackage (build tag fedcuda).
package engine
