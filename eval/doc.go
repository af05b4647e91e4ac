// Package eval scores a model on a held-out data file: the one rule for
// what a data file is and how a job's global model is loaded, used by
// `fedtune eval`, the coordinator's held-out evaluation and devnet.
//
// A data file is read as one token stream: a folder, a .jsonl or an
// .ndjson file through the dataset loader (its samples joined as the
// trainer joins them), anything else as plain text (Tokens). A global
// model is a LoRA adapter merged into the base model, or a full job's
// weights read with the base model's config (LoadGlobal). An instruction
// file (datasets/instruct's JSONL formats) is scored as trainers train on
// it: each record rendered with the model folder's chat template
// (InstructRenderer; InstructExamples tokenizes a whole set), the mean NLL
// over its assistant tokens, each record on its own
// (engine.EvaluateMasked). File does both and model.Evaluate:
//
//	m, err := eval.LoadGlobal(baseDir, global, lora) // lora nil: full weights
//	res, err := eval.File(ctx, m, baseDir, "held-out.jsonl", nil)
package eval
