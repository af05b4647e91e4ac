// Package model is fedtune's LLaMA-family decoder as data: Hugging Face
// LlamaForCausalLM checkpoints (config.json + model.safetensors, or shards
// with model.safetensors.index.json, in F32, F16, BF16 or F64), PEFT LoRA
// adapters (adapter_config.json + adapter_model.safetensors), what a
// training run is told (TrainConfig) and the inference loops (Evaluate,
// Generate) over a forward pass. It computes no gradients and imports no
// autodiff: the training step and the forward pass are model/engine's
// (on a Device), and model/gorgoniaref holds the Gorgonia graph that is
// their independent autodiff reference.
//
// # Weights
//
// A Model holds its Config and its weights as plain float32 slices keyed by
// the names LlamaForCausalLM uses (model.embed_tokens.weight,
// model.layers.N.self_attn.q_proj.weight [out, in], …, lm_head.weight unless
// tie_word_embeddings), so other packages can read and write them without
// Gorgonia. Load checks that the tensors are exactly those the config
// implies; every error names the file and the tensor or field. LoadBF16
// is Load for frozen weights (LoRA training, eval, generate, serve): the
// BF16 matrices of the checkpoint stay bfloat16 (Tensor.BF16, half the
// memory), which model/engine reads without a float32 copy and with the
// same results; Widened and Tensor.Float32s give float32 where it is
// needed, and MergeShared folds an adapter into float32 copies of the
// adapted projections only. Save writes
// canonical safetensors, so the file's SHA-256 is the weight digest
// (DESIGN.md); DigestPath computes it for a file or a folder.
// TokenizerDigest covers what the weight digest does not: the
// SHA-256 of a canonical listing (TokenizerListing) of the folder's
// TokenizerFiles (tokenizer, vocabulary, chat template, generation
// config), which the coordinator registers with the base model and
// inference receipts name.
//
// Import takes a Hugging Face folder as transformers saves it (shards and
// index, BF16/F16/F32, tokenizer and generation files) to the canonical
// form, streaming the tensor bytes unconverted, and writes ImportFile: the
// canonical digest beside the path, size and SHA-256 of every source file
// (ReadImportRecord reads it back; the coordinator registers both). A
// folder it refuses leaves nothing behind.
//
// Architecture: RMSNorm, rotary embeddings in the rotate-half convention
// (inv_freq computed in float32 as transformers does, with rope_scaling of
// type llama3 or linear applied: Config.RopeInvFreq and Config.RopeCosSin
// are the one place every forward pass, the engine's included, takes its
// frequencies from), grouped- and multi-query attention
// (num_key_value_heads), SwiGLU MLP, head_dim = hidden_size /
// num_attention_heads unless given; model_type "mistral"
// (MistralForCausalLM) is the same architecture and is taken when its
// sliding_window is null. Other rope scaling types, attention or
// MLP biases, sliding windows and activations other than silu are refused
// by Config.Validate and ParseConfigJSON, naming the field; config.json keys
// that change nothing fedtune computes are accepted by name.
//
// # Training
//
// TrainConfig holds one run's settings (FillDefaults, Validate, LRAt for
// the schedule); TrainingAdapter gives the adapter a LoRA run starts from
// (fresh and seeded, or a checked copy of one to continue). RunSteps drives
// any Stepper from a BatchSource. A Batch adds, per target, a loss weight,
// per input a document segment and a rotary position (packed instruction
// data, datasets/instruct's Batch converts to it); RunBatchSteps drives a
// BatchStepper (model/engine's Trainer) from a BatchesSource. The helpers every training step shares
// live here too, so that model/engine and model/gorgoniaref call them
// rather than copy them: the tensor names (EmbedName, ProjName, LoRANames,
// AdaptedWeights, ProjOf), Model.Check and Adapter.Check, RopeCosSin.
//
// # Inference
//
// Evaluate gives the mean negative log-likelihood per predicted token over
// non-overlapping windows of max_position_embeddings; Generate samples
// greedily or with temperature and top-p from a seeded RNG. EvaluateMasked
// scores documents on the targets a mask selects (the assistant tokens of
// instruction data), each document on its own. All run over a Forwarder,
// model/engine's Runner, whose Evaluate and Generate run them on a device.
// Sampler is Generate's token draw on its own (one per request, seeded by
// GenerateConfig.Seed), so that model/engine's key/value-cache decoder and
// its batcher draw exactly the tokens Generate draws from the same logits.
package model
