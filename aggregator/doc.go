// Package aggregator owns how a round's updates become the new global
// model: the federated strategies, the canonical-order streaming reduction,
// clipping and Gaussian noise for central differential privacy, and the
// decoding of update files.
//
// # Strategies
//
// New builds a Strategy by name: fedavg (sample-weighted), fedavgm (server
// momentum), fedadam, fedyogi, fedadagrad (FedOpt, server state m and v),
// median, trimmed-mean, krum, multi-krum and bulyan. Their semantics and
// defaults are those of the published definitions as Flower implements
// them (flwr.server.strategy): given the same inputs they return what
// Flower's aggregation functions return, up to float rounding.
// Multi-Krum averages the kept inputs by sample count; Bulyan selects
// θ = n − 2f inputs by repeated Krum and averages, per coordinate, the
// β = θ − 2f values closest to their median.
//
// # Updates
//
// An update is a safetensors file holding, for every tensor of the
// reference (the base model if given, else the first input in canonical
// order), the same name and shape in one of these encodings: F32, F16,
// BF16, F64, or I8 with per-block scales (tensor X as I8, "X.__scales__"
// as F32 [ceil(n/B)], metadata {"fedtune.quant":"int8","fedtune.block":"B"};
// EncodeInt8 and QuantizeTensors write them). Its "__metadata__" may say
// "fedtune.kind": "full" (the default: full weights of the model or of a
// LoRA adapter) or "delta" (a difference to the base; the input counts as
// base + delta and needs a base), and "num_samples" (its FedAvg weight).
// All inputs of a round must be of the same kind. For delta inputs the
// strategy combines the deltas and the result is base + combined (or, for
// FedAvgM/FedOpt, the combined delta is the pseudo-gradient).
//
// # Reduction
//
// Aggregate opens every input, computes its weight digest, and orders the
// inputs canonically: by contributor ID when IDs are given, else by digest.
// It then validates (layout against the reference, every value finite, the
// update norm within Options.MaxNorm); a bad input is rejected with the
// file and tensor at fault and never reaches the strategy (in Strict mode
// any rejection is an error and nothing is written). Strategies that need
// global quantities get them from a first streaming pass (norms for
// clipping, pairwise distances for Krum and Bulyan; a separate distance
// pass when clipping changes the inputs); the last pass streams the inputs
// again chunk by chunk through the strategy's Combiner and writes the
// result as canonical F32 safetensors through safetensors.NewWriter, so
// memory is O(inputs × chunk), plus O(model) only for what the strategy
// itself needs per chunk. Sums that cross chunks (norms, distances) are
// accumulated per kernels.ReduceBlock block in coordinate order, and every
// per-coordinate reduction adds inputs in canonical order, so the result
// is bit-for-bit the same whatever the input order, chunk size or thread
// count.
//
// The update of an input is input − base (full weights with a base), the
// delta, or the input itself (no base). Clipping scales it to norm at most
// C; Gaussian noise of standard deviation z·C/m (m accepted inputs) is
// added to the combined result before any server optimizer step, as in
// DP-FedAvg with fixed clipping. The noise is seeded (ChaCha8 keyed by the
// seed and tensor name, Box–Muller), so a seed reproduces it.
//
// Server state (FedAvgM momentum, FedOpt m and v) is a canonical F32
// safetensors file of tensors "slot/<tensor>", so it is named by its
// digest like any weights; a missing state is the first round (zeros).
package aggregator
