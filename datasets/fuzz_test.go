package datasets

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"
)

// FuzzLoadJSONL checks that any file either loads into well-formed samples
// or fails with an ErrFormat/ErrEmpty error naming the file, never panics.
func FuzzLoadJSONL(f *testing.F) {
	f.Add([]byte("{\"text\":\"hello\"}\n{\"prompt\":\"p\",\"response\":\"r\"}\n"))
	f.Add([]byte("{\"text\":\"a\"}\r\n\r\n{\"text\":\"b\\u00e9\"}"))
	f.Add([]byte("{\"text\": 1}"))
	f.Add([]byte("[]\n{}\nnull\n\"s\"\n"))
	f.Add([]byte("{\"text\":\"\xff\"}"))
	f.Add([]byte("{\"prompt\":\"\",\"response\":\"\"}"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{"in.jsonl": {Data: data}}
		d, err := Load("in.jsonl", Options{FS: fsys})
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrEmpty) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if !strings.Contains(err.Error(), "in.jsonl") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(d.Samples) == 0 {
			t.Fatal("no samples and no error")
		}
		seen := map[string]bool{}
		for _, s := range d.Samples {
			if s.Text == "" || !utf8.ValidString(s.Text) {
				t.Fatalf("bad sample text %q", s.Text)
			}
			if seen[s.ID] || !strings.HasPrefix(s.ID, "in.jsonl:") {
				t.Fatalf("bad sample ID %q", s.ID)
			}
			seen[s.ID] = true
		}
	})
}
