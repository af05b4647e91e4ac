package tokenizer

import (
	"encoding/json"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites the text of a section before pre-tokenization, as a
// tokenizer.json "normalizer" does. Offsets are not tracked, except for one
// bit: lost is set when the text no longer begins at the start of its input
// (Strip took leading spaces, Replace removed a leading match), which
// Metaspace's prepend_scheme "first" looks at.
type normalizer func(s string) (out string, lost bool)

// keep makes a normalizer of a function that never drops leading text.
func keep(f func(string) string) normalizer {
	return func(s string) (string, bool) { return f(s), false }
}

type normalizerJSON struct {
	Type        string            `json:"type"`
	Normalizers []json.RawMessage `json:"normalizers"`
	Prepend     *string           `json:"prepend"`
	Pattern     *patternJSON      `json:"pattern"`
	Content     *string           `json:"content"`
	StripLeft   *bool             `json:"strip_left"`
	StripRight  *bool             `json:"strip_right"`
}

// patternJSON is the {"String": …} or {"Regex": …} pattern of Split,
// Replace and the like.
type patternJSON struct {
	Regex  *string `json:"Regex"`
	String *string `json:"String"`
}

// decodeNormalizer reads the normalizer at path; nil for JSON null.
func decodeNormalizer(raw json.RawMessage, path string) (normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var n normalizerJSON
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, bad("%s: %v", path, err)
	}
	switch n.Type {
	case "NFC":
		return keep(norm.NFC.String), nil
	case "NFD":
		return keep(norm.NFD.String), nil
	case "NFKC":
		return keep(norm.NFKC.String), nil
	case "NFKD":
		return keep(norm.NFKD.String), nil
	case "Lowercase":
		return keep(strings.ToLower), nil
	case "Prepend":
		if n.Prepend == nil {
			return nil, bad("%s.prepend: missing", path)
		}
		p := *n.Prepend
		return keep(func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}), nil
	case "Replace":
		m, err := decodePattern(n.Pattern, path+".pattern")
		if err != nil {
			return nil, err
		}
		if n.Content == nil {
			return nil, bad("%s.content: missing", path)
		}
		c := *n.Content
		return func(s string) (string, bool) {
			ms := m.matches(s)
			return replaceAll(m.matcher, s, c), len(ms) > 0 && ms[0][0] == 0 && ms[0][1] > 0 && c == ""
		}, nil
	case "Strip":
		left, right := n.StripLeft == nil || *n.StripLeft, n.StripRight == nil || *n.StripRight
		return func(s string) (string, bool) {
			n := len(s)
			if left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			lost := len(s) < n
			if right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s, lost
		}, nil
	case "Sequence":
		var seq []normalizer
		for i, r := range n.Normalizers {
			f, err := decodeNormalizer(r, indexPath(path+".normalizers", i))
			if err != nil {
				return nil, err
			}
			if f != nil {
				seq = append(seq, f)
			}
		}
		return func(s string) (string, bool) {
			lost := false
			for _, f := range seq {
				var l bool
				s, l = f(s)
				lost = lost || l
			}
			return s, lost
		}, nil
	default:
		return nil, unsupported("%s.type %q", path, n.Type)
	}
}
