// Package aggregator owns how a round's updates become the new global
// model: the federated strategies, the canonical-order streaming reduction,
// clipping and Gaussian noise for central differential privacy, and the
// decoding of update files.
//
// # Strategies
//
// New builds a Strategy by name: fedavg (sample-weighted), fedavgm (server
// momentum), fedadam, fedyogi, fedadagrad (FedOpt, server state m and v),
// diloco (DiLoCo's outer optimizer: Nesterov-momentum SGD over the averaged
// deltas, server state the momentum buffer), median, trimmed-mean, krum, multi-krum and bulyan. Their semantics and
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
// Aggregate opens every input, memory-mapped where the platform allows
// (else read through), and reads each once, in parallel across inputs, in
// one inspection pass: it hashes the input's canonical encoding (its weight
// digest) and, piece by piece while the piece is in cache, checks that every
// value is finite and sums the update norm when one is needed. It orders the
// inputs canonically: by contributor ID when IDs are given, else by digest.
// It then validates (layout against the reference, the values as found by
// the inspection, the update norm within Options.MaxNorm); a bad input is
// rejected with the file and tensor at fault and never reaches the strategy
// (in Strict mode any rejection is an error and nothing is written).
// Strategies that need pairwise distances (Krum, Bulyan) get them from a
// streaming pass over the accepted (and, with clipping, clipped) inputs;
// the last pass streams the inputs again chunk by chunk through the
// strategy's Combiner and writes the result as canonical F32 safetensors
// through safetensors.NewWriter. F32 inputs on a little-endian host are
// read in place from the page cache (no copy, no system call); other
// encodings are decoded into a per-input chunk buffer. Pages of a mapped
// input are dropped from the resident set once a pass is done with them,
// so memory is O(inputs × chunk), plus O(model) for the base and for what
// the strategy itself needs per chunk. Sums that cross chunks (norms,
// distances) are accumulated per kernels.ReduceBlock block in coordinate
// order, and every per-coordinate reduction adds inputs in canonical order,
// so the result is bit-for-bit the same whatever the input order, chunk
// size or thread count.
//
// A mapped input must not be truncated in place while Aggregate runs:
// during the inspection pass that is reported as an error about the input,
// but in a later pass the process may die of SIGBUS. Replacing a file by
// rename (as every writer in fedtune does) is safe.
//
// The update of an input is input − base (full weights with a base), the
// delta, or the input itself (no base). Clipping scales it to norm at most
// C; Gaussian noise of standard deviation z·C/m (m accepted inputs) is
// added to the combined result before any server optimizer step, as in
// DP-FedAvg with fixed clipping. The noise is seeded (ChaCha8 keyed by the
// seed and tensor name, Box–Muller), so a seed reproduces it.
//
// Server state (FedAvgM and DiLoCo momentum, FedOpt m and v) is a canonical F32
// safetensors file of tensors "slot/<tensor>", so it is named by its
// digest like any weights; a missing state is the first round (zeros).
package aggregator
