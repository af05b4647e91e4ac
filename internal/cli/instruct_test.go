package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/model/chat"
)

func TestInstructRender(t *testing.T) {
	dir := t.TempDir()
	cfg, err := os.ReadFile("../../model/chat/testdata/configs/smollm2.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, chat.ConfigFileName), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "d.jsonl")
	if err := os.WriteFile(data, []byte(`{"instruction":"Add","input":"2 3","output":"5"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model, text, trained, summary string
	}{
		{dir, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nAdd\n\n2 3<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n",
			"5<|im_end|>\n", "1 alpaca records"},
		{"", "Add\n\n2 3\n5\n", "5\n", "plain text"},
	} {
		var out, errb bytes.Buffer
		args := []string{"instruct", "render", data}
		if c.model != "" {
			args = append(args, "--model", c.model)
		}
		if err := RunWith(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var rec renderedRecord
		if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
			t.Fatalf("%q: %v", out.String(), err)
		}
		var trained []byte
		for k, m := range rec.Mask {
			if m == 1 {
				trained = append(trained, byte(rec.IDs[k])) // the byte tokenizer
			}
		}
		if rec.ID != "d.jsonl:1" || rec.Text != c.text || string(trained) != c.trained || !strings.Contains(errb.String(), c.summary) {
			t.Errorf("model %q: %+v (trained %q), stderr %q", c.model, rec, trained, errb.String())
		}
	}
}

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
	} {
		p := filepath.Join(dir, chat.ConfigFileName)
		os.Remove(p)
		if c.config != "" {
			if err := os.WriteFile(p, []byte(c.config), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		r, err := instructRenderer(dir, chat.Options{})
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
