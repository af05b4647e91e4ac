package inference

import "strings"

// ChatMessage is one message of a chat request.
type ChatMessage struct {
	Role    string // system, developer, user, assistant or tool
	Content string
}

// ChatTemplate turns chat messages into the prompt text of a model, ending
// where the assistant's answer begins.
type ChatTemplate interface {
	Render(msgs []ChatMessage) (string, error)
}

// PlainChat is the fallback ChatTemplate for a model without one: each
// message as "role: content" on its own line, then "assistant:".
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
