package eval

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/engine"
)

// InstructRenderer returns the renderer of instruction records for the
// model folder dir: its chat template (tokenizer_config.json's
// chat_template), or instruct.Plain when dir is "" or has none.
func InstructRenderer(dir string, o chat.Options) (instruct.Renderer, error) {
	if dir == "" {
		return instruct.Plain{}, nil
	}
	t, err := chat.Load(dir)
	switch {
	case errors.Is(err, chat.ErrNoTemplate), errors.Is(err, fs.ErrNotExist):
		return instruct.Plain{}, nil
	case err != nil:
		return nil, err
	}
	return instruct.Template{Chat: func(msgs []instruct.Message, gen bool) (string, error) {
		cm := make([]chat.Message, len(msgs))
		for i, m := range msgs {
			cm[i] = chat.Message(m)
		}
		opt := o
		opt.AddGenerationPrompt = gen
		return t.Render(cm, opt)
	}}, nil
}

// InstructExamples renders the records of an instruction dataset (as
// instruct.ReadDataset reads it) with the chat template of the model
// folder modelDir and tokenizes them with tok (which adds no special
// tokens): token ids with the loss mask on the assistant tokens.
func InstructExamples(d *datasets.Dataset, modelDir string, tok instruct.Encoder) ([]instruct.Example, error) {
	recs, _, err := instruct.Records(d)
	if err != nil {
		return nil, err
	}
	r, err := InstructRenderer(modelDir, chat.Options{})
	if err != nil {
		return nil, err
	}
	return instruct.EncodeAll(recs, r, tok)
}

// instructFile scores m on instruction records as trainers train on them:
// rendered with the chat template of modelDir, the mean NLL over the
// assistant tokens, each record on its own (engine.EvaluateMasked).
// progress counts records.
func instructFile(ctx context.Context, m *model.Model, modelDir string, d *datasets.Dataset, tok instruct.Encoder, progress func(done, total int)) (model.EvalResult, error) {
	exs, err := InstructExamples(d, modelDir, tok)
	if err != nil {
		return model.EvalResult{}, err
	}
	docs, masks := make([][]int, len(exs)), make([][]uint8, len(exs))
	for i, ex := range exs {
		docs[i], masks[i] = ex.Tokens, ex.Mask
	}
	res, err := engine.EvaluateMasked(ctx, engine.NewHost(), m, docs, masks, progress)
	if err != nil {
		return model.EvalResult{}, fmt.Errorf("eval %s: %w", d.Name, err)
	}
	return res, nil
}
