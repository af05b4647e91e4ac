package instruct

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/datasets/instruct/internal/gen"
)

var update = flag.Bool("update", false, "rewrite the generated files in datasets/testdata/instruct")

const shipped = "../testdata"

// TestShippedSetIsGenerated checks that datasets/testdata/instruct is
// exactly what internal/gen produces ("go generate" or -update rewrites it).
func TestShippedSetIsGenerated(t *testing.T) {
	for name, want := range gen.Files() {
		p := filepath.Join(shipped, filepath.FromSlash(name))
		if *update {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from internal/gen's output; run go generate ./datasets/instruct", p)
		}
	}
}

// TestShippedSet reads the shipped set, checks the split and renders every
// record with every fixture template.
func TestShippedSet(t *testing.T) {
	train, f, err := Read(filepath.Join(shipped, "instruct", "train.jsonl"))
	if err != nil || f != Messages || len(train) != gen.TrainRecords {
		t.Fatalf("train: %d records, %s, %v", len(train), f, err)
	}
	heldout, f, err := Read(filepath.Join(shipped, "instruct", "heldout.jsonl"))
	if err != nil || f != Messages || len(heldout) != gen.HeldoutRecords {
		t.Fatalf("heldout: %d records, %s, %v", len(heldout), f, err)
	}
	prompts := map[string]bool{}
	for _, r := range train {
		for _, m := range r.Messages {
			if m.Role == RoleUser {
				prompts[m.Content] = true
				break
			}
		}
	}
	for _, r := range heldout {
		for _, m := range r.Messages {
			if m.Role == RoleUser {
				if prompts[m.Content] {
					t.Errorf("%s: held-out prompt %q is in train", r.ID, m.Content)
				}
				break
			}
		}
	}
	all := append(append([]Record{}, train...), heldout...)
	for _, name := range []string{"llama2-chat", "llama3.1-instruct", "llama3.2-instruct", "smollm2"} {
		r := loadTemplate(t, name)
		exs, err := EncodeAll(all, r, tok)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, st, err := Pack(exs, 256, 0); err != nil || st.Truncated != 0 || st.Documents != len(all) {
			t.Errorf("%s: pack %+v, %v", name, st, err)
		}
	}
	if _, err := EncodeAll(all, Plain{}, tok); err != nil {
		t.Fatal(err)
	}
}
