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
//   - Runner (NewRunner), the forward pass for scoring: the Trainer's
//     forward on a Device, weights uploaded once, activations sized to each
//     sequence. Evaluate and EvaluateMasked run model.Evaluate and
//     model.EvaluateMasked on it (eval and the coordinator's held-out
//     evaluation use them on the Host);
//   - Decoder (NewDecoder), the forward pass for generating: a key/value
//     cache of a fixed number of sequence slots, allocated once; Forward
//     runs any mix of prompt chunks (prefill) and single tokens (decoding)
//     of different slots as one batch of rows, each row attending to its
//     own slot's cache. A row's result does not depend on the other rows
//     (bit for bit on the Host), and matches Runner.Logits on the whole
//     sequence to float32 rounding. It needs a CacheDevice (a Device with
//     ScatterRows, CachedAttention and PackWeight; the Host is one).
//     Generate (fedtune generate) runs on it, with model.Generate's rules
//     and sampler, and falls back to the Runner on other devices;
//   - Batcher (NewBatcher), continuous batching for serving: requests
//     (Add: prompt, model.GenerateConfig, context) queue for a Decoder
//     slot, every step runs all active sequences together, and sequences
//     join and leave (finished, cancelled, failed) between steps. A step
//     is one Forward: every decoding sequence's next token (one set of
//     products with a row per sequence) and, beside them, the waiting
//     prompts in arrival order up to BatcherConfig.PrefillTokens (several
//     prompts in one set of products; a longer prompt chunked over steps),
//     so a new request's first token waits for its own prefill and the
//     prompts ahead of it, never for the others to finish (a step that
//     starts a prompt which waited behind another's prefill leaves the
//     decoding sequences out, at most one step in two, unless
//     BatcherConfig.AlwaysDecode). Each
//     request streams its tokens on a channel and samples from its own
//     seeded stream, so it gets the tokens it would get alone (and from
//     Generate). Stats and BatcherConfig.OnFirstToken feed metrics.
//
// Host is also the fast CPU path: products go to the BLAS a build tag
// installs (OpenBLAS, made single-threaded and split over the Host's
// pool), else to its own blocked sgemm with AVX-512, AVX2 or pure-Go
// micro-kernels (gemm.go, gemm_amd64.s, lanes.go); exp-heavy rows run in
// AVX2 loops (vexp_amd64.s, vec_amd64.s) and large operations spread over
// one persistent worker pool (package kernels' Job); a weight given to
// PackWeight is kept in sgemmVec's panel layout, and the rows of such a
// product short of a whole register tile run on row kernels (decoding).
// Frozen weights held as bfloat16 (model.LoadBF16) stay so on the Host
// (BF16Device.WrapBF16, no copy: at 1B parameters 2.5 GB instead of 5):
// the sgemm widens them, exactly, while it packs its B operand, Embed
// while it gathers rows, so every result is the bits of the float32 path;
// trainable weights (full fine-tuning) are float32, and other devices
// get the widened values.
//
// A training step gives the same bits on every path (without OpenBLAS):
// work is split only over independent outputs, so results are identical
// for any number of cores; and every assembly loop and micro-kernel has a
// pure-Go twin (lanes.go) that computes the same lanes with the same fused
// multiply-adds (an exact float32 FMA in Go) and the same fixed order of
// horizontal sums, while the scalar code keeps explicit conversions
// between products and sums so that no compiler fuses them (GOAMD64=v3,
// arm64). FMA is used everywhere rather than nowhere: splitting it would
// halve the micro-kernels' speed on every AVX2 machine, while emulating it
// costs only the pure-Go path. The build tag purego forces the pure-Go
// twins; at run time FEDTUNE_ENGINE_ISA (ISAEnv) = avx512, avx2 or generic
// picks the instruction set (ISA says which is in use), and
// TestTrainingBitExact (make test-bitexact) checks that all give the
// digests of testdata/train_digests.golden.
//
// Trainer.SetTrace hands every operation of a step to a Trace as it runs
// (TraceOp: phase, layer, name and the SHA-256 of its output: forward
// layer by layer, the loss, backward, each trainable tensor's gradient,
// the clipping scale, each tensor's AdamW update). It is nil by default
// and costs a nil check per operation; on, it only reads buffers back, so
// a traced step gives the same bits. FirstDifference names the first
// operation at which two traces of a step differ; an auditor's replay
// (trainer.Replay) uses the trace to name the first operation within the
// first differing step.
//
// The CUDA Device lives in the cudadev subpackage (build tag fedcuda); it
// is not a CacheDevice yet, so generation on it recomputes the sequence
// per token.
package engine
