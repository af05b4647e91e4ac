package instruct

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/model/chat"
)

func TestRendererFor(t *testing.T) {
	dir := t.TempDir()
	if r, err := RendererFor("", chat.Options{}); err != nil || r != (Plain{}) {
		t.Errorf("empty dir: %v, %v", r, err)
	}
	if r, err := RendererFor(dir, chat.Options{}); err != nil || r != (Plain{}) {
		t.Errorf("no config: %v, %v", r, err)
	}
	cfg := filepath.Join(dir, chat.ConfigFileName)
	if err := os.WriteFile(cfg, []byte(`{"bos_token":"<s>"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if r, err := RendererFor(dir, chat.Options{}); err != nil || r != (Plain{}) {
		t.Errorf("config without template: %v, %v", r, err)
	}
	data, err := os.ReadFile("../../model/chat/testdata/configs/smollm2.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := RendererFor(dir, chat.Options{})
	if _, ok := r.(Template); err != nil || !ok {
		t.Fatalf("template: %T, %v", r, err)
	}
	if err := os.WriteFile(cfg, []byte(`{"chat_template":"{% if %}"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RendererFor(dir, chat.Options{}); err == nil {
		t.Error("bad template accepted")
	}

	exs, f, err := Load("../testdata/instruct/heldout.jsonl", r, tok)
	if err != nil || f != Messages || len(exs) != 100 {
		t.Fatalf("load: %d, %s, %v", len(exs), f, err)
	}
}
