package datasets

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"a.txt":            {Data: []byte("first line\n\n  \nsecond line\r\nthird")},
		"d.jsonl":          {Data: []byte("{\"text\":\"hello\"}\n\n{\"prompt\":\"Q: 1+1=\",\"response\":\"A: 2\",\"extra\":3}\n")},
		"custom.jsonl":     {Data: []byte(`{"body":"x","q":"no"}` + "\n" + `{"q":"Q","a":"A"}`)},
		"notes.data":       {Data: []byte("{\"text\":\"read as text\"}\n")},
		"dir/b.txt":        {Data: []byte("bee\n\n")},
		"dir/a.txt":        {Data: []byte("ay")},
		"dir/sub/c.txt":    {Data: []byte("sea\r\n")},
		"dir/skip.md":      {Data: []byte("not a sample")},
		"dir/.hidden.txt":  {Data: []byte("hidden")},
		"dir/.git/x.txt":   {Data: []byte("hidden")},
		"dir/empty.txt":    {Data: []byte("\n\n")},
		"forced.jsonl.txt": {Data: []byte(`{"text":"forced"}`)},
		"bom.jsonl":        {Data: []byte("\xef\xbb\xbf{\"text\":\"b\"}")},
		"bom.txt":          {Data: []byte("\xef\xbb\xbfb\n")},
		"order/a/b.txt":    {Data: []byte("ab")},
		"order/a.txt":      {Data: []byte("a")},
	}
	tests := []struct {
		name string
		path string
		opts Options
		want []Sample
	}{
		{"text lines", "a.txt", Options{}, []Sample{{"a.txt:1", "first line"}, {"a.txt:4", "second line"}, {"a.txt:5", "third"}}},
		{"jsonl text and prompt", "d.jsonl", Options{}, []Sample{{"d.jsonl:1", "hello"}, {"d.jsonl:3", "Q: 1+1=\nA: 2"}}},
		{"jsonl custom fields", "custom.jsonl", Options{TextField: "body", PromptField: "q", ResponseField: "a"}, []Sample{{"custom.jsonl:1", "x"}, {"custom.jsonl:2", "Q\nA"}}},
		{"unknown extension is text", "notes.data", Options{}, []Sample{{"notes.data:1", `{"text":"read as text"}`}}},
		{"forced jsonl", "forced.jsonl.txt", Options{Format: "jsonl"}, []Sample{{"forced.jsonl.txt:1", "forced"}}},
		{"folder", "dir", Options{}, []Sample{{"a.txt", "ay"}, {"b.txt", "bee"}, {"sub/c.txt", "sea"}}},
		{"byte order mark jsonl", "bom.jsonl", Options{}, []Sample{{"bom.jsonl:1", "b"}}},
		{"byte order mark text", "bom.txt", Options{}, []Sample{{"bom.txt:1", "b"}}},
		{"folder bytewise order", "order", Options{}, []Sample{{"a.txt", "a"}, {"a/b.txt", "ab"}}},
		{"folder trailing slash", "dir/", Options{}, []Sample{{"a.txt", "ay"}, {"b.txt", "bee"}, {"sub/c.txt", "sea"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.FS = fsys
			d, err := Load(tc.path, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Samples, tc.want) {
				t.Errorf("samples = %q, want %q", d.Samples, tc.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	fsys := fstest.MapFS{
		"badjson.jsonl":   {Data: []byte("{\"text\":\"ok\"}\n{\"text\": \n")},
		"missing.jsonl":   {Data: []byte("{\"text\":\"ok\"}\n\n{\"prompt\":\"only\"}\n")},
		"nonstr.jsonl":    {Data: []byte("{\"text\":5}\n")},
		"array.jsonl":     {Data: []byte("[1,2]\n")},
		"null.jsonl":      {Data: []byte("null\n")},
		"emptytext.jsonl": {Data: []byte("{\"text\":\"\"}\n")},
		"trailing.jsonl":  {Data: []byte("{\"text\":\"a\"} {}\n")},
		"utf8.jsonl":      {Data: []byte("{\"text\":\"a\"}\n{\"text\":\"\xff\"}\n")},
		"utf8.txt":        {Data: []byte("ok\nok\nbad \xc3\x28 here\n")},
		"empty.txt":       {Data: []byte("\n \n\r\n")},
		"empty.jsonl":     {Data: []byte("")},
		"dir/a.txt":       {Data: []byte("fine")},
		"dir/b.txt":       {Data: []byte("line\n\xfe")},
		"nodir/x.md":      {Data: []byte("x")},
	}
	tests := []struct {
		name, path string
		opts       Options
		sentinel   error
		want       string
	}{
		{"bad json", "badjson.jsonl", Options{}, ErrFormat, "badjson.jsonl:2: bad JSON"},
		{"missing field", "missing.jsonl", Options{}, ErrFormat, `missing.jsonl:3: record has no "text" field and no "prompt"/"response" pair`},
		{"non-string field", "nonstr.jsonl", Options{}, ErrFormat, `nonstr.jsonl:1: field "text" is not a string`},
		{"array record", "array.jsonl", Options{}, ErrFormat, "array.jsonl:1: record is not a JSON object"},
		{"null record", "null.jsonl", Options{}, ErrFormat, "null.jsonl:1: record is not a JSON object"},
		{"empty text", "emptytext.jsonl", Options{}, ErrFormat, `emptytext.jsonl:1: field "text" is empty`},
		{"trailing data", "trailing.jsonl", Options{}, ErrFormat, "trailing.jsonl:1: bad JSON"},
		{"jsonl not utf8", "utf8.jsonl", Options{}, ErrFormat, "utf8.jsonl:2: not valid UTF-8"},
		{"text not utf8", "utf8.txt", Options{}, ErrFormat, "utf8.txt:3: not valid UTF-8"},
		{"folder file not utf8", "dir", Options{}, ErrFormat, "dir/b.txt:2: not valid UTF-8"},
		{"empty text file", "empty.txt", Options{}, ErrEmpty, "empty.txt"},
		{"empty jsonl file", "empty.jsonl", Options{}, ErrEmpty, "empty.jsonl"},
		{"folder without txt", "nodir", Options{}, ErrEmpty, "nodir"},
		{"no such file", "nope.txt", Options{}, fs.ErrNotExist, "nope.txt"},
		{"dir format on file", "utf8.txt", Options{Format: "dir"}, nil, "needs a folder"},
		{"text format on folder", "dir", Options{Format: "text"}, nil, "needs a file"},
		{"unknown format", "utf8.txt", Options{Format: "csv"}, nil, `unknown format "csv"`},
		{"unknown format on folder", "dir", Options{Format: "csv"}, nil, `unknown format "csv"`},
		{"invalid path", "../x", Options{}, nil, "invalid fs.FS path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.FS = fsys
			d, err := Load(tc.path, tc.opts)
			if err == nil {
				t.Fatalf("Load = %v, want error", d.Samples)
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Errorf("error %q is not %v", err, tc.sentinel)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadOS(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.jsonl"), []byte(`{"text":"a"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "folder", "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "folder", "deep", "y.txt"), []byte("why\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Load(filepath.Join(dir, "x.jsonl"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "x.jsonl" || !reflect.DeepEqual(d.Samples, []Sample{{"x.jsonl:1", "a"}}) {
		t.Errorf("got %+v", d)
	}
	d, err = Load(filepath.Join(dir, "folder"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "folder" || !reflect.DeepEqual(d.Samples, []Sample{{"deep/y.txt", "why"}}) {
		t.Errorf("got %+v", d)
	}
	t.Chdir(dir)
	if d, err = Load(".", Options{Format: "dir"}); err != nil || len(d.Samples) != 1 {
		t.Errorf("Load(.) = %v, %v", d, err)
	}
}
