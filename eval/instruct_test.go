package eval

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/model/chat"
)

func TestInstructRenderer(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		config string // "" writes none
		plain  bool
		fails  bool
	}{
		{"", true, false},
		{`{"bos_token":"<s>"}`, true, false},
		{`{"chat_template":"{% for m in messages %}{{ m.content }}!{% endfor %}"}`, false, false},
		{`{"chat_template":"{% if %}"}`, false, true},
		// A template the coordinator ships that runs away: refused at
		// load (a trainer's instruction data is never rendered with it).
		{`{"chat_template":"{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"}`, false, true},
	} {
		p := filepath.Join(dir, chat.ConfigFileName)
		os.Remove(p)
		if c.config != "" {
			if err := os.WriteFile(p, []byte(c.config), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		r, err := InstructRenderer(dir, chat.Options{})
		if (err != nil) != c.fails {
			t.Errorf("%s: err %v", c.config, err)
			continue
		}
		if c.fails {
			continue
		}
		if _, plain := r.(instruct.Plain); plain != c.plain {
			t.Errorf("%s: renderer %T", c.config, r)
		}
		if !c.plain {
			text, spans, err := r.Render([]instruct.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo"}})
			if err != nil || text != "hi!yo!" || len(spans) != 1 || spans[0] != (instruct.Span{Start: 3, End: 6}) {
				t.Errorf("render %q %v %v", text, spans, err)
			}
		}
	}
}
