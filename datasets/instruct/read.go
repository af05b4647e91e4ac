package instruct

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unicode/utf8"
)

// Format is the shape of the records of an instruction file.
type Format string

// The formats Read detects.
const (
	Messages         Format = "messages"
	Alpaca           Format = "alpaca"
	PromptCompletion Format = "prompt-completion"
)

// Roles a message may have.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// ErrFormat wraps every error about the content of an instruction file.
var ErrFormat = errors.New("instruct: bad input")

// Message is one turn of a conversation. It has the fields of
// model/Message, so either converts to the other.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Record is one instruction example as a conversation.
type Record struct {
	// ID is "<file name>:<line>" (1-based), stable when records are added.
	ID string
	// Messages are the turns; at least one has RoleAssistant.
	Messages []Message
}

// Read reads the instruction file at path.
func Read(path string) ([]Record, Format, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("instruct: %w", err)
	}
	return Decode(data, filepath.Base(path))
}

var bom = []byte("\xef\xbb\xbf")

// Decode reads instruction records from JSONL data; name is the file name
// used in IDs and errors.
func Decode(data []byte, name string) ([]Record, Format, error) {
	var (
		recs []Record
		fd   formatDetector
	)
	err := eachLine(data, name, func(n int, line []byte) error {
		msgs, err := fd.decode(line, fmt.Sprintf("line %d", n))
		if err != nil {
			return lineError(name, n, "%v", err)
		}
		recs = append(recs, Record{ID: fmt.Sprintf("%s:%d", name, n), Messages: msgs})
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return recs, fd.format, nil
}

// eachLine calls fn with every non-blank line of JSONL data (1-based line
// numbers, the line without its line break); the data must hold at least
// one.
func eachLine(data []byte, name string, fn func(n int, line []byte) error) error {
	data = bytes.TrimPrefix(data, bom)
	n, seen := 0, 0
	for len(data) > 0 {
		n++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if !utf8.Valid(line) {
			return lineError(name, n, "invalid UTF-8")
		}
		seen++
		if err := fn(n, line); err != nil {
			return err
		}
	}
	if seen == 0 {
		return fmt.Errorf("instruct: %s: no records: %w", name, ErrFormat)
	}
	return nil
}

// formatDetector decodes records and holds a file to the format of its
// first one.
type formatDetector struct {
	format Format
	first  string // where the format was set
}

// decode decodes one record; where names it for the error of a mixed file.
func (fd *formatDetector) decode(line []byte, where string) ([]Message, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	f, err := detect(obj)
	if err != nil {
		return nil, err
	}
	if fd.format == "" {
		fd.format, fd.first = f, where
	} else if f != fd.format {
		return nil, fmt.Errorf("a %s record in a %s file (format set by %s)", f, fd.format, fd.first)
	}
	return decodeRecord(f, obj)
}

func lineError(name string, line int, format string, args ...any) error {
	return fmt.Errorf("instruct: %s:%d: %s: %w", name, line, fmt.Sprintf(format, args...), ErrFormat)
}

// detect names the format of one record by its fields.
func detect(obj map[string]json.RawMessage) (Format, error) {
	has := func(k string) bool { _, ok := obj[k]; return ok }
	var found []Format
	if has("messages") {
		found = append(found, Messages)
	}
	if has("instruction") || has("output") {
		found = append(found, Alpaca)
	}
	if has("prompt") || has("completion") {
		found = append(found, PromptCompletion)
	}
	switch len(found) {
	case 0:
		return "", errors.New(`record has none of "messages", "instruction"/"output", "prompt"/"completion"`)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("record mixes the fields of formats %s and %s", found[0], found[1])
}

func decodeRecord(f Format, obj map[string]json.RawMessage) ([]Message, error) {
	var msgs []Message
	switch f {
	case Messages:
		m, err := messageList(obj["messages"], "messages")
		if err != nil {
			return nil, err
		}
		msgs = m
	case Alpaca:
		instr, err := stringField(obj, "instruction", true)
		if err != nil {
			return nil, err
		}
		input, err := stringField(obj, "input", false)
		if err != nil {
			return nil, err
		}
		output, err := stringField(obj, "output", true)
		if err != nil {
			return nil, err
		}
		user := instr
		if input != "" {
			user += "\n\n" + input
		}
		msgs = []Message{{Role: RoleUser, Content: user}, {Role: RoleAssistant, Content: output}}
	case PromptCompletion:
		p, okP := obj["prompt"]
		c, okC := obj["completion"]
		if !okP {
			return nil, errors.New(`field "prompt": missing`)
		}
		if !okC {
			return nil, errors.New(`field "completion": missing`)
		}
		if t := bytes.TrimSpace(p); len(t) > 0 && t[0] == '[' {
			pm, err := messageList(p, "prompt")
			if err != nil {
				return nil, err
			}
			cm, err := messageList(c, "completion")
			if err != nil {
				return nil, err
			}
			msgs = append(pm, cm...)
			break
		}
		prompt, err := stringField(obj, "prompt", false)
		if err != nil {
			return nil, err
		}
		completion, err := stringField(obj, "completion", true)
		if err != nil {
			return nil, err
		}
		msgs = []Message{{Role: RoleUser, Content: prompt}, {Role: RoleAssistant, Content: completion}}
	}
	for _, m := range msgs {
		if m.Role == RoleAssistant {
			return msgs, nil
		}
	}
	return nil, errors.New("no assistant turn: nothing to learn")
}

// stringField returns obj[k] as a string; a missing field is an error when
// required, "" otherwise.
func stringField(obj map[string]json.RawMessage, k string, required bool) (string, error) {
	raw, ok := obj[k]
	if !ok || string(raw) == "null" {
		if required {
			return "", fmt.Errorf("field %q: missing", k)
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("field %q: not a string", k)
	}
	if required && s == "" {
		return "", fmt.Errorf("field %q: empty", k)
	}
	return s, nil
}

// messageList decodes a list of {role, content} messages.
func messageList(raw json.RawMessage, field string) ([]Message, error) {
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("field %q: not a list of objects", field)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("field %q: empty", field)
	}
	msgs := make([]Message, len(list))
	for i, m := range list {
		at := fmt.Sprintf("%s[%d]", field, i)
		role, err := stringField(m, "role", true)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		switch role {
		case RoleSystem, RoleUser, RoleAssistant:
		default:
			return nil, fmt.Errorf("%s: field \"role\": %q is not system, user or assistant", at, role)
		}
		content, err := stringField(m, "content", false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		if _, ok := m["content"]; !ok {
			return nil, fmt.Errorf("%s: field \"content\": missing", at)
		}
		msgs[i] = Message{Role: role, Content: content}
	}
	return msgs, nil
}
