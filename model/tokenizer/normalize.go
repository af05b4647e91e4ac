package tokenizer

import (
	"encoding/json"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites the text of a section before pre-tokenization, as a
// tokenizer.json "normalizer" does (offsets are not tracked).
type normalizer func(string) string

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
		return norm.NFC.String, nil
	case "NFD":
		return norm.NFD.String, nil
	case "NFKC":
		return norm.NFKC.String, nil
	case "NFKD":
		return norm.NFKD.String, nil
	case "Lowercase":
		return strings.ToLower, nil
	case "Prepend":
		if n.Prepend == nil {
			return nil, bad("%s.prepend: missing", path)
		}
		p := *n.Prepend
		return func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}, nil
	case "Replace":
		m, err := decodePattern(n.Pattern, path+".pattern")
		if err != nil {
			return nil, err
		}
		if n.Content == nil {
			return nil, bad("%s.content: missing", path)
		}
		c := *n.Content
		return func(s string) string { return m.replace(s, c) }, nil
	case "Strip":
		left, right := n.StripLeft == nil || *n.StripLeft, n.StripRight == nil || *n.StripRight
		return func(s string) string {
			if left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
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
		return func(s string) string {
			for _, f := range seq {
				s = f(s)
			}
			return s
		}, nil
	default:
		return nil, unsupported("%s.type %q", path, n.Type)
	}
}
