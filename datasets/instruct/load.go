package instruct

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/fedtune/fedtune/model/chat"
)

// RendererFor returns the renderer for the model folder dir: Template with
// the chat template of its tokenizer_config.json, or Plain when dir is "",
// has no tokenizer_config.json, or its config has no chat_template.
func RendererFor(dir string, o chat.Options) (Renderer, error) {
	if dir == "" {
		return Plain{}, nil
	}
	t, err := chat.Load(dir)
	switch {
	case err == nil:
		return Template{T: t, Options: o}, nil
	case errors.Is(err, chat.ErrNoTemplate), errors.Is(err, fs.ErrNotExist):
		return Plain{}, nil
	}
	return nil, err
}

// Load reads the instruction file at path and encodes every record.
func Load(path string, r Renderer, enc Encoder) ([]Example, Format, error) {
	recs, f, err := Read(path)
	if err != nil {
		return nil, "", err
	}
	exs, err := EncodeAll(recs, r, enc)
	if err != nil {
		return nil, "", fmt.Errorf("instruct: %s: %w", path, err)
	}
	return exs, f, nil
}
