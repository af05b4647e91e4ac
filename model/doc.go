// Package model is fedtune's LLaMA-family decoder: Hugging Face
// LlamaForCausalLM checkpoints (config.json + model.safetensors, or shards
// with model.safetensors.index.json, in F32, F16, BF16 or F64), PEFT LoRA
// adapters (adapter_config.json + adapter_model.safetensors), training in
// Gorgonia, and a plain-Go inference path for eval and generate.
//
// # Weights
//
// A Model holds its Config and its weights as plain float32 slices keyed by
// the names LlamaForCausalLM uses (model.embed_tokens.weight,
// model.layers.N.self_attn.q_proj.weight [out, in], …, lm_head.weight unless
// tie_word_embeddings), so other packages can read and write them without
// Gorgonia. Load checks that the tensors are exactly those the config
// implies; every error names the file and the tensor or field. Save writes
// canonical safetensors, so the file's SHA-256 is the weight digest
// (DESIGN.md); DigestPath computes it for a file or a folder.
//
// Architecture: RMSNorm, rotary embeddings in the rotate-half convention
// (inv_freq computed in float32 as transformers does, with rope_scaling of
// type llama3 or linear applied: Config.RopeInvFreq and Config.RopeCosSin
// are the one place every forward pass, the engine's included, takes its
// frequencies from), grouped- and multi-query attention
// (num_key_value_heads), SwiGLU MLP, head_dim = hidden_size /
// num_attention_heads unless given. Other rope scaling types, attention or
// MLP biases, sliding windows and activations other than silu are refused
// by Config.Validate and ParseConfigJSON, naming the field; config.json keys
// that change nothing fedtune computes are accepted by name.
//
// # Training
//
// NewTrainer builds one Gorgonia graph for a fixed [batch, seq_len] and one
// TapeMachine, reused for every Step (bind the batch, RunAll, read the
// gradients, clip by global norm, AdamW written here over the value
// tensors, Reset, zero the gradients), so memory stays flat. With a
// LoRAConfig only the adapter is trained (the base is frozen and its digest
// unchanged); without, every weight is (full fine-tuning, or pre-training
// from New's seeded initialisation). Runs are bit-for-bit repeatable for a
// given seed. Gorgonia v0.9.18 pitfalls worked around in graph.go:
// InverseSqrt's gradient is wrong (Inverse(Sqrt) is used); ByIndices'
// gradient is wrong along the last axis (the loss gathers from a flattened
// [N·V, 1] view along axis 0); gradients accumulate into the bound dual
// values across runs (zeroed after each step); symbolic differentiation
// adds gradient nodes for frozen inputs too (only the subgraph needed by the
// loss and the wanted gradients is compiled); Grad may be called only once
// per graph. gorgonia.org/tensor v0.9.24's SoftMax and LogSoftMax start each
// row's maximum at the tensor's first element, so rows far from it come out
// NaN or Inf (LoRA training hit it at lr 2e-2): softmax.go builds both from
// a per-row shift, Exp, Sum and a division instead.
//
// # Inference
//
// Runner is a plain-Go forward with a key/value cache that grows with the
// sequence (gonum BLAS for the matrix products), tested against the graph and an independent float64
// reference. Evaluate gives the mean negative log-likelihood per predicted
// token over non-overlapping windows of max_position_embeddings; Generate
// samples greedily or with temperature and top-p from a seeded RNG.
package model
