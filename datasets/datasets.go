package datasets

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"
)

// Sample is one training example.
type Sample struct {
	// ID identifies the sample within its dataset and does not change when
	// other samples are added: "<file>:<line>" for text and JSONL files, the
	// file's path relative to the folder for folder datasets.
	ID string
	// Text is the sample's text.
	Text string
}

// Dataset is a named, ordered list of samples.
type Dataset struct {
	// Name is the base name of the path the dataset was loaded from.
	Name string
	// Samples are in file order (line order, or sorted path order).
	Samples []Sample
}

// Formats accepted in Options.Format.
const (
	FormatAuto  = ""      // chosen by stat (folder) and extension (.jsonl, .ndjson)
	FormatText  = "text"  // one sample per non-empty line
	FormatDir   = "dir"   // one sample per .txt file
	FormatJSONL = "jsonl" // one sample per JSON object line
)

// Default JSONL field names.
const (
	DefaultTextField     = "text"
	DefaultPromptField   = "prompt"
	DefaultResponseField = "response"
)

// Options tune Load. The zero value loads from the real file system and
// picks the format from the path.
type Options struct {
	// Format is "", "text", "dir" or "jsonl"; "" picks "dir" for a folder,
	// "jsonl" for a .jsonl or .ndjson file and "text" for any other file.
	Format string
	// TextField, PromptField and ResponseField name the JSONL fields; empty
	// means "text", "prompt" and "response".
	TextField, PromptField, ResponseField string
	// FS is the file system path is resolved in (an fs.FS path: slash
	// separated, unrooted). nil means the operating system's, and path is
	// then an ordinary OS path.
	FS fs.FS
}

// Errors callers can test for with errors.Is.
var (
	// ErrFormat wraps every error about the content of a dataset file.
	ErrFormat = errors.New("datasets: bad input")
	// ErrEmpty is returned when a dataset has no samples.
	ErrEmpty = errors.New("datasets: no samples")
)

// JoinPrompt is the template that turns a JSONL prompt/response record into
// a sample's text: the prompt, a newline, the response. Generation should
// prompt with JoinPrompt(prompt, "") so that the model continues with the
// response.
func JoinPrompt(prompt, response string) string {
	return prompt + "\n" + response
}

// Load reads the dataset at path (a file or a folder; see the package doc
// for the formats and sample IDs).
func Load(path string, opts Options) (*Dataset, error) {
	fsys, name := opts.FS, path
	if fsys == nil {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("datasets: load %s: %w", path, err)
		}
		fsys, name = os.DirFS(filepath.Dir(abs)), filepath.Base(abs)
	} else {
		name = strings.TrimPrefix(pathClean(name), "/")
		if !fs.ValidPath(name) {
			return nil, fmt.Errorf("datasets: load %s: invalid fs.FS path", path)
		}
	}
	st, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("datasets: load %s: %w", path, err)
	}
	format := opts.Format
	if format == FormatAuto {
		switch {
		case st.IsDir():
			format = FormatDir
		case strings.HasSuffix(name, ".jsonl") || strings.HasSuffix(name, ".ndjson"):
			format = FormatJSONL
		default:
			format = FormatText
		}
	}
	switch format {
	case FormatText, FormatJSONL, FormatDir:
	default:
		return nil, fmt.Errorf("datasets: load %s: unknown format %q (want text, dir or jsonl)", path, format)
	}
	if (format == FormatDir) != st.IsDir() {
		if st.IsDir() {
			return nil, fmt.Errorf("datasets: load %s: format %q needs a file, this is a folder", path, format)
		}
		return nil, fmt.Errorf("datasets: load %s: format %q needs a folder, this is a file", path, format)
	}
	d := &Dataset{Name: st.Name()}
	if d.Name == "." && path != "" {
		d.Name = path
	}
	switch format {
	case FormatText:
		d.Samples, err = loadText(fsys, name, path)
	case FormatJSONL:
		d.Samples, err = loadJSONL(fsys, name, path, opts)
	case FormatDir:
		d.Samples, err = loadDir(fsys, name, path)
	}
	if err != nil {
		return nil, err
	}
	if len(d.Samples) == 0 {
		return nil, fmt.Errorf("datasets: load %s: %w", path, ErrEmpty)
	}
	return d, nil
}

func pathClean(p string) string {
	if p == "" {
		return "."
	}
	return path.Clean(p)
}

// bom is the UTF-8 byte order mark, ignored at the start of a file.
var bom = []byte("\xef\xbb\xbf")

// lineError is the error for a bad line of a dataset file.
func lineError(file string, line int, format string, args ...any) error {
	return fmt.Errorf("datasets: %s:%d: %s: %w", file, line, fmt.Sprintf(format, args...), ErrFormat)
}

// lines calls fn for each line of data (1-based number, without its \n or
// \r\n).
func lines(data []byte, fn func(n int, line []byte) error) error {
	n := 0
	for len(data) > 0 {
		n++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if err := fn(n, line); err != nil {
			return err
		}
	}
	return nil
}

// badUTF8 returns the 1-based line of the first invalid UTF-8 byte in data,
// or 0 if data is valid.
func badUTF8(data []byte) int {
	if utf8.Valid(data) {
		return 0
	}
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size == 1 {
			return line
		}
		if r == '\n' {
			line++
		}
		i += size
	}
	return line
}

func loadText(fsys fs.FS, name, display string) ([]Sample, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	data = bytes.TrimPrefix(data, bom)
	if n := badUTF8(data); n > 0 {
		return nil, lineError(display, n, "not valid UTF-8")
	}
	base := path.Base(name)
	var out []Sample
	err = lines(data, func(n int, line []byte) error {
		if len(bytes.TrimSpace(line)) == 0 {
			return nil
		}
		out = append(out, Sample{ID: fmt.Sprintf("%s:%d", base, n), Text: string(line)})
		return nil
	})
	return out, err
}

func loadJSONL(fsys fs.FS, name, display string, opts Options) ([]Sample, error) {
	textF := cmp.Or(opts.TextField, DefaultTextField)
	promptF := cmp.Or(opts.PromptField, DefaultPromptField)
	respF := cmp.Or(opts.ResponseField, DefaultResponseField)
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("datasets: %w", err)
	}
	data = bytes.TrimPrefix(data, bom)
	base := path.Base(name)
	var out []Sample
	err = lines(data, func(n int, line []byte) error {
		if len(bytes.TrimSpace(line)) == 0 {
			return nil
		}
		text, err := decodeRecord(line, textF, promptF, respF)
		if err != nil {
			return lineError(display, n, "%s", err.Error())
		}
		out = append(out, Sample{ID: fmt.Sprintf("%s:%d", base, n), Text: text})
		return nil
	})
	return out, err
}

// decodeRecord returns the sample text of one JSONL record.
func decodeRecord(line []byte, textF, promptF, respF string) (string, error) {
	if !utf8.Valid(line) {
		return "", errors.New("not valid UTF-8")
	}
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(line, &rec); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return "", errors.New("record is not a JSON object")
		}
		return "", fmt.Errorf("bad JSON: %v", err)
	}
	if rec == nil {
		return "", errors.New("record is not a JSON object")
	}
	field := func(key string) (string, bool, error) {
		raw, ok := rec[key]
		if !ok {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", true, fmt.Errorf("field %q is not a string", key)
		}
		return s, true, nil
	}
	text, ok, err := field(textF)
	if err != nil {
		return "", err
	}
	if ok {
		if text == "" {
			return "", fmt.Errorf("field %q is empty", textF)
		}
		return text, nil
	}
	prompt, okP, err := field(promptF)
	if err != nil {
		return "", err
	}
	resp, okR, err := field(respF)
	if err != nil {
		return "", err
	}
	if !okP || !okR {
		return "", fmt.Errorf("record has no %q field and no %q/%q pair", textF, promptF, respF)
	}
	if prompt == "" && resp == "" {
		return "", fmt.Errorf("fields %q and %q are both empty", promptF, respF)
	}
	return JoinPrompt(prompt, resp), nil
}

func loadDir(fsys fs.FS, root, display string) ([]Sample, error) {
	var out []Sample
	err := fs.WalkDir(fsys, root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("datasets: %w", err)
		}
		if p != root && strings.HasPrefix(de.Name(), ".") {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if de.IsDir() || !strings.HasSuffix(de.Name(), ".txt") {
			return nil
		}
		rel := strings.TrimPrefix(p, root+"/")
		if root == "." {
			rel = p
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("datasets: %w", err)
		}
		data = bytes.TrimPrefix(data, bom)
		if n := badUTF8(data); n > 0 {
			return lineError(display+"/"+rel, n, "not valid UTF-8")
		}
		text := strings.TrimRight(string(data), "\r\n")
		if strings.TrimSpace(text) == "" {
			return nil
		}
		out = append(out, Sample{ID: rel, Text: text})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
