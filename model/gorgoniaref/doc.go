// Package gorgoniaref is the Gorgonia graph of fedtune's LLaMA-family
// decoder: the independent autodiff reference that model/engine's
// hand-written training step is tested against, and a training device a
// user can still choose (trainer device "gorgonia"). It is several times
// slower than the engine and gives the same updates to float32 rounding.
//
// NewTrainer builds one Gorgonia graph for a fixed [batch, seq_len] and one
// TapeMachine, reused for every Step (bind the batch, RunAll, read the
// gradients, clip by global norm, AdamW written here over the value
// tensors, Reset, zero the gradients), so memory stays flat. With a
// LoRAConfig only the adapter is trained (the base is frozen and its digest
// unchanged); without, every weight is (full fine-tuning, or pre-training
// from model.New's seeded initialisation). Runs are bit-for-bit repeatable
// for a given seed. It takes everything but the graph from package model
// (TrainConfig, TrainingAdapter, tensor names, RopeCosSin).
//
// The tests check the graph's forward against model/modeltest's float64
// reference and its gradients against finite differences in float64.
//
// With the build tag openblas, Gorgonia's products go through OpenBLAS.
package gorgoniaref
