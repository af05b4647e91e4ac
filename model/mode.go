package model

// Fine-tuning modes: what a job trains and what its rounds commit. A job
// file's finetune.mode and a training task's mode are one of these.
const (
	// ModeLoRA trains LoRA adapters (LoRAConfig) on frozen base weights;
	// a round commits an adapter.
	ModeLoRA = "lora"
	// ModeFull trains every weight; a round commits full weights.
	ModeFull = "full"
	// ModePretrain trains every weight of a freshly initialised model,
	// DiLoCo style: each round every trainer runs the job's inner steps
	// from the global weights and sends the delta; a round commits full
	// weights (the outer optimizer's step).
	ModePretrain = "pretrain"
)
