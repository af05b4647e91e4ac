// Package strictjson decodes JSON that fedtune parties sign or send to each
// other so that a byte string has at most one reading.
//
// encoding/json matches object member names case-insensitively and keeps
// the last of duplicate names, so a payload signed as {"name":"a",...,
// "NAME":"b"} is read as "b" by Go and possibly as "a" by a reader in
// another language. Unmarshal refuses such input instead: it uses
// github.com/go-json-experiment/json (the encoding/json/v2 API) with names
// matched exactly, duplicate names in any object refused, members that the
// target type does not declare refused, invalid UTF-8 refused and nothing
// but white space allowed after the one value.
//
// Every decoder of signed or network JSON in fedtune (ledger transaction
// payloads and bodies, DSSE envelopes, dataset manifests and proofs, tx
// bodies given to the CLI or to an aggregator) goes through Unmarshal.
// Encoding stays with encoding/json, so the bytes that are signed do not
// change.
package strictjson

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

var options = json.JoinOptions(
	json.RejectUnknownMembers(true),
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
)

// Unmarshal decodes the single JSON value in data into v (a non-nil
// pointer). Errors name what was wrong and where, as a JSON pointer:
//
//	duplicate field "name" at /body
//	unknown field "NAME" at /body (field names are case-sensitive: did you mean "name"?)
func Unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v, options); err != nil {
		return describe(err)
	}
	// Map keys are matched exactly, but {"loss":1,"LOSS":2} still reads
	// as one key to a case-insensitive reader: refuse it too.
	return CheckNames(data)
}

// CheckNames returns an error if an object in the JSON value data holds two
// member names that are equal or equal up to case (Unicode simple case
// folding, as encoding/json matches names), naming both and the object.
// Unmarshal calls it; tests and fuzz targets use it to check that what was
// accepted could not be read two ways.
func CheckNames(data []byte) error {
	type frame struct {
		object, wantName bool
		names            map[string]string // folded name -> name
	}
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	var stack []frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantName = true
		}
	}
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return errors.New(strings.TrimPrefix(err.Error(), "jsontext: "))
		}
		k := tok.Kind()
		if n := len(stack); n > 0 && stack[n-1].wantName && k == '"' {
			top := &stack[n-1]
			name := tok.String()
			f := fold(name)
			if prev, ok := top.names[f]; ok {
				where := parentOf(dec.StackPointer())
				if prev == name {
					return fmt.Errorf("duplicate field %q at %s", name, where)
				}
				return fmt.Errorf("fields %q and %q at %s differ only in case", prev, name, where)
			}
			top.names[f] = name
			top.wantName = false
			continue
		}
		switch k {
		case '{':
			stack = append(stack, frame{object: true, wantName: true, names: map[string]string{}})
		case '[':
			stack = append(stack, frame{})
		case '}', ']':
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

// fold maps every rune of s to the smallest rune of its case-folding orbit,
// so that fold(a) == fold(b) exactly when strings.EqualFold(a, b).
func fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}

// describe rewrites the library's errors into short sentences.
func describe(err error) error {
	var se *json.SemanticError
	if errors.As(err, &se) && se.Err == json.ErrUnknownName {
		ptr := se.JSONPointer
		name := ptr.LastToken()
		where := parentOf(ptr)
		msg := fmt.Sprintf("unknown field %q at %s", name, where)
		if hint := caseTwin(se.GoType, name); hint != "" {
			msg += fmt.Sprintf(" (field names are case-sensitive: did you mean %q?)", hint)
		}
		return errors.New(msg)
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		switch {
		case errors.Is(syn.Err, jsontext.ErrDuplicateName):
			return fmt.Errorf("duplicate field %q at %s (byte %d)", syn.JSONPointer.LastToken(), parentOf(syn.JSONPointer), syn.ByteOffset)
		case strings.Contains(syn.Err.Error(), "after top-level value"):
			return fmt.Errorf("trailing data after the JSON value (byte %d)", syn.ByteOffset)
		}
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return errors.New(strings.TrimPrefix(msg, "jsontext: "))
}

func parentOf(p jsontext.Pointer) string {
	s := string(p)
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return "the top level"
	}
	return s[:i]
}

// caseTwin returns the JSON name of a field of struct type t that equals
// name but for case, or "".
func caseTwin(t reflect.Type, name string) string {
	for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map) {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return ""
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		n, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if n == "" {
			n = f.Name
		}
		if n != "-" && n != name && strings.EqualFold(n, name) {
			return n
		}
	}
	return ""
}
