package coordinator

import (
	"context"
	"errors"
	"io/fs"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/engine"
)

// evaluateInstruct scores m on instruction records (instruct.ReadDataset's
// dataset) as trainers train on them: rendered with the chat template of
// the base model folder baseDir (plain text when it has none), tokenized
// with tok, the mean NLL over the assistant tokens, each record on its own
// (engine.EvaluateMasked).
func evaluateInstruct(ctx context.Context, baseDir string, m *model.Model, tok instruct.Encoder, ds *datasets.Dataset) (model.EvalResult, error) {
	recs, _, err := instruct.Records(ds)
	if err != nil {
		return model.EvalResult{}, err
	}
	r, err := instructRenderer(baseDir)
	if err != nil {
		return model.EvalResult{}, err
	}
	exs, err := instruct.EncodeAll(recs, r, tok)
	if err != nil {
		return model.EvalResult{}, err
	}
	docs, masks := make([][]int, len(exs)), make([][]uint8, len(exs))
	for i, ex := range exs {
		docs[i], masks[i] = ex.Tokens, ex.Mask
	}
	return engine.EvaluateMasked(ctx, engine.NewHost(), m, docs, masks, nil)
}

// instructRenderer is trainer.InstructRenderer (a role imports no other
// role's package): the chat template of the model folder dir, or
// instruct.Plain when it has none.
func instructRenderer(dir string) (instruct.Renderer, error) {
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
		return t.Render(cm, chat.Options{AddGenerationPrompt: gen})
	}}, nil
}
