package instruct

import (
	"fmt"
	"strings"
)

// Span is a byte range [Start, End) of a rendered text.
type Span struct{ Start, End int }

// Renderer turns a conversation into training text and the spans of its
// assistant turns, in order and not overlapping.
type Renderer interface {
	Render(msgs []Message) (string, []Span, error)
}

// ChatFunc renders a conversation with a chat template, ending with the
// header of an assistant turn when addGenerationPrompt is set: a model's
// model/chat.Template.Render with Options.AddGenerationPrompt.
type ChatFunc func(msgs []Message, addGenerationPrompt bool) (string, error)

// Template renders with a chat template, finding assistant spans by
// rendering prefixes (see the package doc).
type Template struct {
	Chat ChatFunc
}

// Render renders msgs without a generation prompt and returns the spans of
// the assistant turns.
func (r Template) Render(msgs []Message) (string, []Span, error) {
	render := r.Chat
	full, err := render(msgs, false)
	if err != nil {
		return "", nil, err
	}
	var spans []Span
	for i, m := range msgs {
		if m.Role != RoleAssistant {
			continue
		}
		start := 0
		if i > 0 {
			before, err := render(msgs[:i], true)
			if err != nil {
				return "", nil, fmt.Errorf("instruct: rendering the turns before assistant turn %d: %w", i, err)
			}
			if !strings.HasPrefix(full, before) {
				return "", nil, fmt.Errorf("instruct: the template renders turns [0, %d) with a generation prompt as text that does not begin the whole rendering; cannot find assistant turn %d", i, i)
			}
			start = len(before)
		}
		through, err := render(msgs[:i+1], false)
		if err != nil {
			return "", nil, fmt.Errorf("instruct: rendering the turns through assistant turn %d: %w", i, err)
		}
		end := commonPrefix(full, through)
		if len(spans) > 0 && start < spans[len(spans)-1].End {
			return "", nil, fmt.Errorf("instruct: assistant turn %d starts inside the previous one", i)
		}
		if end <= start {
			return "", nil, fmt.Errorf("instruct: assistant turn %d renders as no text", i)
		}
		spans = append(spans, Span{start, end})
	}
	return full, spans, nil
}

// commonPrefix returns the length in bytes of the longest common prefix of
// a and b, not cutting a UTF-8 sequence.
func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	for i > 0 && i < len(a) && a[i]&0xC0 == 0x80 {
		i--
	}
	return i
}

// Plain renders a conversation without a template: each turn's content
// followed by "\n"; the assistant turns with their "\n" are the spans.
type Plain struct{}

// Render renders msgs as plain text.
func (Plain) Render(msgs []Message) (string, []Span, error) {
	var b strings.Builder
	var spans []Span
	for _, m := range msgs {
		start := b.Len()
		b.WriteString(m.Content)
		b.WriteByte('\n')
		if m.Role == RoleAssistant {
			spans = append(spans, Span{start, b.Len()})
		}
	}
	return b.String(), spans, nil
}
