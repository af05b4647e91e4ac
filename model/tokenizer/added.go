package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedSet finds added tokens in text as Hugging Face's AddedVocabulary
// does: leftmost-longest matches, a single_word token only between
// non-word characters, lstrip and rstrip taking the whitespace beside the
// token with it.
type addedSet struct {
	byFirst map[byte][]addedMatch // longest first
}

type addedMatch struct {
	tok     *addedToken
	content string // the content to match (normalized for normalized tokens)
}

func (a *addedSet) add(tok *addedToken, content string) {
	if a.byFirst == nil {
		a.byFirst = map[byte][]addedMatch{}
	}
	l := append(a.byFirst[content[0]], addedMatch{tok, content})
	sort.SliceStable(l, func(i, j int) bool { return len(l[i].content) > len(l[j].content) })
	a.byFirst[content[0]] = l
}

// segment is a stretch of text (tok nil) or an added token, starting at
// byte at of the text split.
type segment struct {
	text string
	tok  *addedToken
	at   int
}

func isWordChar(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_' }

// split cuts s at the added tokens.
func (a *addedSet) split(s string) []segment {
	if len(a.byFirst) == 0 {
		return []segment{{text: s}}
	}
	var out []segment
	done := 0 // s[:done] is in out
	for i := 0; i < len(s); {
		var m *addedMatch
		for k, c := range a.byFirst[s[i]] {
			if strings.HasPrefix(s[i:], c.content) {
				m = &a.byFirst[s[i]][k]
				break
			}
		}
		if m == nil {
			i++
			continue
		}
		start, stop := i, i+len(m.content)
		i = stop
		if m.tok.single {
			before, _ := utf8.DecodeLastRuneInString(s[:start])
			after, _ := utf8.DecodeRuneInString(s[stop:])
			if (start > 0 && isWordChar(before)) || (stop < len(s) && isWordChar(after)) {
				continue
			}
		}
		if m.tok.lstrip {
			start = max(done, len(strings.TrimRightFunc(s[:start], unicode.IsSpace)))
		}
		if m.tok.rstrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
			i = stop
		}
		if start > done {
			out = append(out, segment{text: s[done:start], at: done})
		}
		out = append(out, segment{tok: m.tok, at: start})
		done = stop
	}
	if done < len(s) || len(out) == 0 {
		out = append(out, segment{text: s[done:], at: done})
	}
	return out
}
