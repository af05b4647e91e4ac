package eval

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fedtune/fedtune/model/tokenizer"
)

// Tokens reads folders, .jsonl and .ndjson through the dataset
// loader, and anything else as one plain text.
func TestTokens(t *testing.T) {
	tok, err := tokenizer.Load("", 260)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	records := "{\"text\": \"ab\"}\n{\"text\": \"cd\"}\n"
	joined := tok.Encode("ab\ncd\n")
	for _, tc := range []struct {
		path string
		want []int
	}{
		{write("a.jsonl", records), joined},
		{write("b.ndjson", records), joined},
		{filepath.Dir(write("folder/c.txt", "ab")), tok.Encode("ab\n")},
		{write("d.txt", records), tok.Encode(records)},
	} {
		got, err := Tokens(tc.path, tok)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %d tokens %v…, want %d", tc.path, len(got), got[:min(8, len(got))], len(tc.want))
		}
	}
	if _, err := Tokens(filepath.Join(dir, "missing.txt"), tok); err == nil {
		t.Error("missing file: no error")
	}
}
