package eval

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// IsDataset reports whether path is read through the dataset loader (a
// folder, or a name ending in .jsonl or .ndjson, any case) rather than as
// plain text.
func IsDataset(path string, isDir bool) bool {
	low := strings.ToLower(path)
	return isDir || strings.HasSuffix(low, ".jsonl") || strings.HasSuffix(low, ".ndjson")
}

// Tokens tokenizes the data file at path as one stream: a folder, JSONL
// or NDJSON through the dataset loader, anything else as plain text.
func Tokens(path string, tok tokenizer.Tokenizer) ([]int, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if IsDataset(path, st.IsDir()) {
		ds, err := datasets.Load(path, datasets.Options{})
		if err != nil {
			return nil, err
		}
		return datasets.Tokenize(ds, tok), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return tok.Encode(string(b)), nil
}

// LoadGlobal loads a job's global model over the base model folder
// baseDir: with lora set, global is a LoRA adapter file (safetensors)
// merged into the base model; with lora nil, global is a full job's
// weights file, read with the base model's config. An empty global is the
// base model itself. The model is for scoring (File): the base's BF16
// matrices stay bfloat16 (model.LoadBF16).
func LoadGlobal(baseDir, global string, lora *model.LoRAConfig) (*model.Model, error) {
	if global == "" {
		return model.LoadBF16(baseDir)
	}
	if lora != nil {
		ad, err := model.ReadAdapterFile(global, *lora)
		if err != nil {
			return nil, fmt.Errorf("global adapter: %w", err)
		}
		base, err := model.LoadBF16(baseDir)
		if err != nil {
			return nil, fmt.Errorf("base model: %w", err)
		}
		m, err := base.MergeShared(ad)
		if err != nil {
			return nil, fmt.Errorf("global adapter: %w", err)
		}
		return m, nil
	}
	dir, err := os.MkdirTemp("", "fedtune-eval-full-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg, err := filepath.Abs(filepath.Join(baseDir, model.ConfigFile))
	if err != nil {
		return nil, err
	}
	if global, err = filepath.Abs(global); err != nil {
		return nil, err
	}
	if err := errors.Join(os.Symlink(cfg, filepath.Join(dir, model.ConfigFile)),
		os.Symlink(global, filepath.Join(dir, model.WeightsFile))); err != nil {
		return nil, err
	}
	m, err := model.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("global weights: %w", err)
	}
	return m, nil
}

// File scores m on the data file at path (see Tokens), tokenized with the
// tokenizer of the model folder tokDir, on the engine's Host device;
// progress, if set, is called as engine.Evaluate calls it. An instruction
// file (instruct.ReadDataset reads it) is scored on its assistant tokens
// only, each record rendered with tokDir's chat template and run on its
// own (engine.EvaluateMasked; progress then counts records).
func File(ctx context.Context, m *model.Model, tokDir, path string, progress func(done, total int)) (model.EvalResult, error) {
	tok, err := tokenizer.Load(tokDir, m.Config.VocabSize)
	if err != nil {
		return model.EvalResult{}, err
	}
	if d, _, err := instruct.ReadDataset(path); err == nil {
		return instructFile(ctx, m, tokDir, d, tok, progress)
	}
	tokens, err := Tokens(path, tok)
	if err != nil {
		return model.EvalResult{}, err
	}
	res, err := engine.Evaluate(ctx, engine.NewHost(), m, tokens, progress)
	if err != nil {
		return model.EvalResult{}, fmt.Errorf("eval %s: %w", path, err)
	}
	return res, nil
}
