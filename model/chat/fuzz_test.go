package chat

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzParse feeds tokenizer_config.json bytes (a model folder is outside
// input: a downloaded model, or the config a coordinator sends its
// trainers) to Parse and renders a fixed conversation with whatever it
// accepts: an error is fine, a panic is not.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "configs", "*.json"))
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"chat_template":"{{ messages[0]['content'] }}"}`))
	f.Add([]byte(`{"chat_template":[{"name":"default","template":"{% for m in messages %}{{ m.role }}{% endfor %}"}]}`))
	f.Add([]byte(`{"chat_template":"{{ raise_exception('no') }}"}`))
	f.Add([]byte(`{"chat_template":"{% if %}"}`))
	f.Add([]byte(`{"bos_token":{"content":1}}`))
	msgs := []Message{{Role: "system", Content: "s"}, {Role: "user", Content: "{{ x }}"}, {Role: "assistant", Content: "a"}, {Role: "user", Content: "u"}}
	now := time.Date(2026, 2, 3, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		tmpl, err := Parse(data, "")
		if err != nil {
			return
		}
		for _, gen := range []bool{false, true} {
			_, _ = tmpl.Render(msgs, Options{AddGenerationPrompt: gen, Now: now})
		}
	})
}
