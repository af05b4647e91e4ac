package strictjson

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"unicode"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

var options = json.JoinOptions(
	json.RejectUnknownMembers(true),
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
	// encoding/json writes a time.Duration as integer nanoseconds; v2 has
	// no default for it.
	jsonv1.FormatDurationAsNano(true),
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
	// as one key to a case-insensitive reader: refuse it too. Struct
	// fields need no second pass (a case twin is an unknown field), nor do
	// raw values (they are checked when they are decoded in turn).
	if holdsMap(reflect.TypeOf(v)) {
		return CheckNames(data)
	}
	return nil
}

var mapTypes sync.Map // reflect.Type -> bool

var rawValueType = reflect.TypeFor[jsontext.Value]()

// holdsMap reports whether decoding into t can fill a map (or an interface,
// which may become one): only then can two object names differ only in case.
func holdsMap(t reflect.Type) bool {
	if v, ok := mapTypes.Load(t); ok {
		return v.(bool)
	}
	v := holdsMapWalk(t, map[reflect.Type]bool{})
	mapTypes.Store(t, v)
	return v
}

func holdsMapWalk(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false
	}
	seen[t] = true
	if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 && (t.Name() == "RawMessage" || t == rawValueType) {
		return false // json.RawMessage, jsontext.Value: decoded later, on their own
	}
	switch t.Kind() {
	case reflect.Map, reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return holdsMapWalk(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && holdsMapWalk(f.Type, seen) {
				return true
			}
		}
	}
	return false
}

// CheckNames returns an error if an object in the JSON value data holds two
// member names that are equal or equal up to case (Unicode simple case
// folding, as encoding/json matches names), naming both and the object.
// Unmarshal calls it; tests and fuzz targets use it to check that what was
// accepted could not be read two ways.
func CheckNames(data []byte) error {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	var stack []nameFrame
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
			if prev, ok := top.add(name); ok {
				where := parentOf(dec.StackPointer())
				if prev == name {
					return fmt.Errorf("duplicate field %q at %s", name, where)
				}
				return fmt.Errorf("fields %q and %q at %s differ only in case", prev, name, where)
			}
			top.wantName = false
			continue
		}
		switch k {
		case '{':
			stack = append(stack, nameFrame{object: true, wantName: true})
		case '[':
			stack = append(stack, nameFrame{})
		case '}', ']':
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

// nameFrame is an open object or array in CheckNames.
type nameFrame struct {
	object, wantName bool
	names            []string          // the object's names while few
	folded           map[string]string // fold(name) -> name, once many
}

// add records name and returns an earlier name equal to it up to case.
// Small objects are scanned; large ones (maps) are indexed, so that an
// object of n names costs O(n) and not O(n²).
func (f *nameFrame) add(name string) (string, bool) {
	const scanMax = 32
	if f.folded == nil {
		for _, p := range f.names {
			if strings.EqualFold(p, name) {
				return p, true
			}
		}
		if len(f.names) < scanMax {
			f.names = append(f.names, name)
			return "", false
		}
		f.folded = make(map[string]string, 2*scanMax)
		for _, p := range f.names {
			f.folded[fold(p)] = p
		}
		f.names = nil
	}
	k := fold(name)
	if p, ok := f.folded[k]; ok {
		return p, true
	}
	f.folded[k] = name
	return "", false
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
