package inference

import (
	"strings"

	"github.com/fedtune/fedtune/model/chat"
)

// ChatMessage is one message of a chat request.
type ChatMessage = chat.Message

// ChatTemplate turns chat messages into the prompt text of a model, ending
// where the assistant's answer begins.
type ChatTemplate interface {
	Render(msgs []ChatMessage) (string, error)
}

// PlainChat is the fallback ChatTemplate for a model without one: each
// message as "role: content" on its own line, then "assistant:" (the form
// fedtune audit receipt re-derives). The model's BOS token, if any, is
// put before it.
type PlainChat struct{}

// Render implements ChatTemplate.
func (PlainChat) Render(msgs []ChatMessage) (string, error) {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.Role)
		b.WriteString(": ")
		b.WriteString(m.Content)
		b.WriteString("\n")
	}
	b.WriteString("assistant:")
	return b.String(), nil
}

// TemplateChat is a model's own chat template (model/chat), rendered with
// the generation prompt as transformers' apply_chat_template does. Its
// text holds the special tokens (BOS included), so nothing is added.
type TemplateChat struct{ T *chat.Template }

// Render implements ChatTemplate.
func (t TemplateChat) Render(msgs []ChatMessage) (string, error) {
	return t.T.Render(msgs, chat.Options{AddGenerationPrompt: true})
}
