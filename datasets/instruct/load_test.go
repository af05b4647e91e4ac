package instruct

import "testing"

func TestLoad(t *testing.T) {
	exs, f, err := Load("../testdata/instruct/heldout.jsonl", loadTemplate(t, "smollm2"), tok)
	if err != nil || f != Messages || len(exs) != 100 || exs[0].ID != "heldout.jsonl:1" {
		t.Fatalf("load: %d, %s, %v", len(exs), f, err)
	}
	if _, _, err := Load("../testdata/instruct/heldout.jsonl", loadTemplate(t, "mistral-instruct"), tok); err == nil {
		t.Error("mistral's template accepted a system turn")
	}
	if _, _, err := Load("missing.jsonl", Plain{}, tok); err == nil {
		t.Error("missing file loaded")
	}
}
