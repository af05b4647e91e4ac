package tokenizer

import (
	"strings"
	"time"

	"github.com/dlclark/regexp2/v2"
)

// matcher finds the non-overlapping matches of a pattern in a string, as
// byte ranges in increasing order. An empty match (a look-around alone) is
// a split point.
type matcher interface {
	matches(s string) [][2]int
}

// literal matches every occurrence of a fixed string.
type literal string

func (l literal) matches(s string) [][2]int {
	if l == "" {
		return nil
	}
	var out [][2]int
	for i := 0; ; {
		j := strings.Index(s[i:], string(l))
		if j < 0 {
			return out
		}
		out = append(out, [2]int{i + j, i + j + len(l)})
		i += j + len(l)
	}
}

// pieceFunc wraps a hand-written split (splitGPT2, splitLlama3) whose pieces
// are all matches of its pattern.
type pieceFunc func(string) []string

func (f pieceFunc) matches(s string) [][2]int {
	var out [][2]int
	at := 0
	for _, p := range f(s) {
		out = append(out, [2]int{at, at + len(p)})
		at += len(p)
	}
	return out
}

// runeClass matches each rune (one match per rune) for which f is true.
type runeClass func(rune) bool

func (f runeClass) matches(s string) [][2]int {
	var out [][2]int
	v := decodeRunes(s)
	for i, r := range v.r {
		if f(r) {
			out = append(out, [2]int{v.off[i], v.off[i+1]})
		}
	}
	return out
}

// regex is an Oniguruma-style pattern run by regexp2 (which, unlike Go's
// regexp, has look-ahead). Bytes that are not valid UTF-8 are seen as
// U+FFFD.
type regex struct{ re *regexp2.Regexp }

// regexTimeout bounds one search, so that a pathological pattern cannot
// hang encoding.
const regexTimeout = 10 * time.Second

func compileRegex(pattern string) (*regex, error) {
	// Oniguruma's ^ and $ match at line boundaries (Ruby syntax).
	re, err := regexp2.Compile(pattern, regexp2.Multiline)
	if err != nil {
		return nil, err
	}
	re.MatchTimeout = regexTimeout
	return &regex{re}, nil
}

func (x *regex) matches(s string) [][2]int {
	v := decodeRunes(s)
	runes := make([]rune, len(v.r))
	for i, r := range v.r {
		if r < 0 {
			r = '\uFFFD'
		}
		runes[i] = r
	}
	var out [][2]int
	m, err := x.re.FindRunesMatch(runes)
	for err == nil && m != nil {
		out = append(out, [2]int{v.off[m.RuneIndex], v.off[m.RuneIndex+m.RuneLength]})
		m, err = x.re.FindNextMatch(m)
	}
	return out
}

// replaceAll returns s with every match of m replaced by content (taken
// literally: no group references).
func replaceAll(m matcher, s, content string) string {
	ms := m.matches(s)
	if len(ms) == 0 {
		return s
	}
	// An empty match inserts content (as Oniguruma's replace does).
	var b strings.Builder
	at := 0
	for _, r := range ms {
		b.WriteString(s[at:r[0]])
		b.WriteString(content)
		at = r[1]
	}
	b.WriteString(s[at:])
	return b.String()
}

// patternMatcher is the matcher of a decoded pattern.
type patternMatcher struct{ matcher }

// decodePattern reads a {"String": …} or {"Regex": …} pattern. The GPT-2 and
// LLaMA 3 split patterns use hand-written matchers (same matches, faster).
func decodePattern(p *patternJSON, path string) (patternMatcher, error) {
	switch {
	case p == nil:
		return patternMatcher{}, bad("%s: missing", path)
	case p.String != nil && p.Regex == nil:
		return patternMatcher{literal(*p.String)}, nil
	case p.Regex != nil && p.String == nil:
		switch *p.Regex {
		case gpt2Pattern:
			return patternMatcher{pieceFunc(splitGPT2)}, nil
		case llama3Pattern:
			return patternMatcher{pieceFunc(splitLlama3)}, nil
		}
		re, err := compileRegex(*p.Regex)
		if err != nil {
			return patternMatcher{}, unsupported("%s.Regex %q: %v", path, *p.Regex, err)
		}
		return patternMatcher{re}, nil
	default:
		return patternMatcher{}, bad("%s: want exactly one of String and Regex", path)
	}
}
