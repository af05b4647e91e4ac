package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrEmpty is returned (wrapped) for a file with no YAML document.
var ErrEmpty = errors.New("the file is empty")

// ErrMultipleDocuments is returned (wrapped) for a file with more than one document.
var ErrMultipleDocuments = errors.New("more than one YAML document; the file must hold exactly one")

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type .+$`)
	lineMsg      = regexp.MustCompile(`^line (\d+): (.*)$`)
)

// Decode decodes the single YAML document in data into v, which should
// already hold its defaults. An unknown key, a value of the wrong type, an
// empty file or a second document is an error naming name and the line.
func Decode(name string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: %w", name, ErrEmpty)
		}
		return errors.New(ErrorText(name, err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %w", name, ErrMultipleDocuments)
	}
	return nil
}

// ErrorText rewrites an error from gopkg.in/yaml.v3 as "name:line: message",
// one violation after another, separated by "; ".
func ErrorText(name string, err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		lines := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			if m := unknownField.FindStringSubmatch(e); m != nil {
				lines = append(lines, fmt.Sprintf("%s:%s: unknown key %q", name, m[1], m[2]))
			} else if m := lineMsg.FindStringSubmatch(e); m != nil {
				lines = append(lines, fmt.Sprintf("%s:%s: %s", name, m[1], m[2]))
			} else {
				lines = append(lines, fmt.Sprintf("%s: %s", name, e))
			}
		}
		return strings.Join(lines, "; ")
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := lineMsg.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s:%s: %s", name, m[1], m[2])
	}
	return fmt.Sprintf("%s: %s", name, msg)
}
