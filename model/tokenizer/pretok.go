package tokenizer

import (
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The two pre-tokenizer patterns are written out by hand because Go's regexp
// has no look-ahead, which both need for `\s+(?!\S)`. Each function returns
// the consecutive pieces of s (their concatenation is s). Bytes that are not
// valid UTF-8 count as "other" (neither letter, number nor space).

// rs is s decoded to runes with each rune's byte offset.
type rs struct {
	s   string
	r   []rune
	off []int // len(r)+1 offsets
}

func decodeRunes(s string) rs {
	v := rs{s: s}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			r, n = -1, 1 // invalid byte: "other"
		}
		v.r = append(v.r, r)
		v.off = append(v.off, i)
		i += n
	}
	v.off = append(v.off, len(s))
	return v
}

func isL(r rune) bool  { return r >= 0 && unicode.IsLetter(r) }
func isN(r rune) bool  { return r >= 0 && unicode.IsNumber(r) }
func isS(r rune) bool  { return r >= 0 && unicode.IsSpace(r) }
func isO(r rune) bool  { return !isL(r) && !isN(r) && !isS(r) } // [^\s\p{L}\p{N}]
func isNL(r rune) bool { return r == '\r' || r == '\n' }

// run returns the end of the run of runes from i satisfying f.
func (v rs) run(i int, f func(rune) bool) int {
	for i < len(v.r) && f(v.r[i]) {
		i++
	}
	return i
}

func (v rs) at(i int) rune {
	if i < len(v.r) {
		return v.r[i]
	}
	return -2 // end of text; matches no class
}

// contraction matches 's 't 're 've 'm 'll 'd at i (case-insensitively when
// fold is set) and returns its end, or -1.
func (v rs) contraction(i int, fold bool) int {
	if v.at(i) != '\'' {
		return -1
	}
	lower := func(r rune) rune {
		if fold && r >= 0 {
			return unicode.ToLower(r)
		}
		return r
	}
	a, b := lower(v.at(i+1)), lower(v.at(i+2))
	switch {
	case a == 's' || a == 't' || a == 'm' || a == 'd':
		return i + 2
	case (a == 'r' || a == 'v') && b == 'e', a == 'l' && b == 'l':
		return i + 3
	}
	return -1
}

// spaceRun handles `\s+(?!\S)|\s+` at i (a space): the whole run when it
// ends the text or is one rune long, else all of it but its last rune.
func (v rs) spaceRun(i int) int {
	j := v.run(i, isS)
	if j < len(v.r) && j-i > 1 {
		return j - 1
	}
	return j
}

func (v rs) pieces(next func(i int) int) []string {
	var out []string
	for i := 0; i < len(v.r); {
		j := next(i)
		out = append(out, v.s[v.off[i]:v.off[j]])
		i = j
	}
	return out
}

// splitGPT2 implements
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func splitGPT2(s string) []string {
	v := decodeRunes(s)
	return v.pieces(func(i int) int {
		if j := v.contraction(i, false); j > 0 {
			return j
		}
		k := i
		if v.r[i] == ' ' {
			k = i + 1
		}
		switch c := v.at(k); {
		case isL(c):
			return v.run(k, isL)
		case isN(c):
			return v.run(k, isN)
		case k < len(v.r) && isO(c):
			return v.run(k, isO)
		}
		return v.spaceRun(i)
	})
}

// splitLlama3 implements
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func splitLlama3(s string) []string {
	v := decodeRunes(s)
	return v.pieces(func(i int) int {
		if j := v.contraction(i, true); j > 0 {
			return j
		}
		c := v.r[i]
		if isL(c) {
			return v.run(i, isL)
		}
		if !isNL(c) && !isN(c) && isL(v.at(i+1)) {
			return v.run(i+1, isL)
		}
		if isN(c) {
			j := i + 1
			for j < len(v.r) && j < i+3 && isN(v.r[j]) {
				j++
			}
			return j
		}
		k := i
		if c == ' ' {
			k = i + 1
		}
		if k < len(v.r) && isO(v.r[k]) {
			return v.run(v.run(k, isO), isNL)
		}
		// c is a space here.
		j := v.run(i, isS)
		for e := j - 1; e >= i; e-- {
			if isNL(v.r[e]) {
				return e + 1
			}
		}
		return v.spaceRun(i)
	})
}

// piece is a stretch of text on its way through the pre-tokenizers. start
// is set when it begins at the start of the input text (Metaspace's
// prepend_scheme "first" looks at it).
type piece struct {
	s     string
	start bool
}

// preTokenizer splits (and may rewrite) pieces, as a tokenizer.json
// "pre_tokenizer" does.
type preTokenizer interface {
	pre(ps []piece) []piece
}

// The split behaviours of Hugging Face tokenizers (SplitDelimiterBehavior).
type behavior int

const (
	isolated behavior = iota
	removed
	mergedWithPrevious
	mergedWithNext
	contiguous
)

var behaviors = map[string]behavior{
	"Isolated": isolated, "Removed": removed, "MergedWithPrevious": mergedWithPrevious,
	"MergedWithNext": mergedWithNext, "Contiguous": contiguous,
}

// splitter is the Split pre-tokenizer (and the core of Digits and
// Metaspace's split).
type splitter struct {
	m        matcher
	behavior behavior
	invert   bool
}

type span struct {
	a, b  int
	match bool
}

// spans cuts s into the matches of m and the stretches between them, as
// Hugging Face's NormalizedString::split does before applying a behaviour.
func (sp splitter) spans(s string) []span {
	var out []span
	at := 0
	for _, r := range sp.m.matches(s) {
		if r[0] > at {
			out = append(out, span{at, r[0], sp.invert})
		}
		out = append(out, span{r[0], r[1], !sp.invert})
		at = r[1]
	}
	if at < len(s) {
		out = append(out, span{at, len(s), sp.invert})
	}
	return out
}

func (sp splitter) split(s string) [][2]int {
	spans := sp.spans(s)
	var out [][2]int
	switch sp.behavior {
	case isolated:
		for _, x := range spans {
			out = append(out, [2]int{x.a, x.b})
		}
	case removed:
		for _, x := range spans {
			if !x.match {
				out = append(out, [2]int{x.a, x.b})
			}
		}
	case mergedWithPrevious:
		prev := false
		for _, x := range spans {
			if x.match && !prev && len(out) > 0 {
				out[len(out)-1][1] = x.b
			} else {
				out = append(out, [2]int{x.a, x.b})
			}
			prev = x.match
		}
	case mergedWithNext:
		prev := false
		for i := len(spans) - 1; i >= 0; i-- {
			x := spans[i]
			if x.match && !prev && len(out) > 0 {
				out[len(out)-1][0] = x.a
			} else {
				out = append(out, [2]int{x.a, x.b})
			}
			prev = x.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case contiguous:
		prev := false
		for _, x := range spans {
			if x.match == prev && len(out) > 0 {
				out[len(out)-1][1] = x.b
			} else {
				out = append(out, [2]int{x.a, x.b})
			}
			prev = x.match
		}
	}
	// Empty pieces (from empty matches) are dropped after the behaviour.
	kept := out[:0]
	for _, r := range out {
		if r[1] > r[0] {
			kept = append(kept, r)
		}
	}
	return kept
}

func (sp splitter) pre(ps []piece) []piece {
	var out []piece
	for _, p := range ps {
		for _, r := range sp.split(p.s) {
			out = append(out, piece{s: p.s[r[0]:r[1]], start: p.start && r[0] == 0})
		}
	}
	return out
}

// byteLevel is the ByteLevel pre-tokenizer: an optional leading space, the
// GPT-2 split when use_regex is set, then every byte mapped to its
// character in GPT-2's bytes_to_unicode table.
type byteLevel struct {
	prefixSpace bool
	regex       bool
}

func (bl byteLevel) pre(ps []piece) []piece {
	var out []piece
	for _, p := range ps {
		s := p.s
		if bl.prefixSpace && !strings.HasPrefix(s, " ") {
			s = " " + s
		}
		parts := []string{s}
		if bl.regex {
			parts = splitGPT2(s)
		}
		for i, w := range parts {
			out = append(out, piece{s: toByteLevel(w), start: p.start && i == 0})
		}
	}
	return out
}

// toByteLevel maps each byte of s to its byte-level character.
func toByteLevel(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteRune[s[i]])
	}
	return b.String()
}

// metaspace is the Metaspace pre-tokenizer: spaces become the replacement
// character (▁), which is prepended per prepend_scheme, and the text is
// split before each replacement character when split is set.
type metaspace struct {
	repl    string
	prepend string // "always", "first" or "never"
	split   bool
}

func (ms metaspace) pre(ps []piece) []piece {
	var out []piece
	r, _ := utf8.DecodeRuneInString(ms.repl)
	sp := splitter{m: runeClass(func(c rune) bool { return c == r }), behavior: mergedWithNext}
	for _, p := range ps {
		s := strings.ReplaceAll(p.s, " ", ms.repl)
		if !strings.HasPrefix(s, ms.repl) && (ms.prepend == "always" || ms.prepend == "first" && p.start) {
			s = ms.repl + s
		}
		q := piece{s: s, start: p.start}
		if !ms.split {
			out = append(out, q)
			continue
		}
		out = append(out, sp.pre([]piece{q})...)
	}
	return out
}

type preSequence []preTokenizer

func (seq preSequence) pre(ps []piece) []piece {
	for _, p := range seq {
		ps = p.pre(ps)
	}
	return ps
}

type preTokenizerJSON struct {
	Type           string            `json:"type"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Pattern        *patternJSON      `json:"pattern"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	Replacement    *string           `json:"replacement"`
	PrependScheme  *string           `json:"prepend_scheme"`
	Split          *bool             `json:"split"`
	Individual     bool              `json:"individual_digits"`
}

// decodePreTokenizer reads the pre-tokenizer at path; nil for JSON null.
// byteLevelSeen is set when it holds a ByteLevel pre-tokenizer.
func decodePreTokenizer(raw json.RawMessage, path string, byteLevelSeen *bool) (preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var p preTokenizerJSON
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, bad("%s: %v", path, err)
	}
	switch p.Type {
	case "ByteLevel":
		*byteLevelSeen = true
		return byteLevel{
			prefixSpace: p.AddPrefixSpace != nil && *p.AddPrefixSpace,
			regex:       p.UseRegex == nil || *p.UseRegex,
		}, nil
	case "Split":
		m, err := decodePattern(p.Pattern, path+".pattern")
		if err != nil {
			return nil, err
		}
		b, ok := behaviors[p.Behavior]
		if !ok {
			return nil, unsupported("%s.behavior %q", path, p.Behavior)
		}
		return splitter{m: m.matcher, behavior: b, invert: p.Invert}, nil
	case "Metaspace":
		ms := metaspace{repl: "▁", prepend: "always", split: p.Split == nil || *p.Split}
		if p.Replacement != nil {
			if utf8.RuneCountInString(*p.Replacement) != 1 {
				return nil, bad("%s.replacement %q: want one character", path, *p.Replacement)
			}
			ms.repl = *p.Replacement
		}
		switch {
		case p.PrependScheme != nil:
			switch *p.PrependScheme {
			case "always", "first", "never":
				ms.prepend = *p.PrependScheme
			default:
				return nil, unsupported("%s.prepend_scheme %q", path, *p.PrependScheme)
			}
		case p.AddPrefixSpace != nil && !*p.AddPrefixSpace:
			ms.prepend = "never" // the older spelling
		}
		return ms, nil
	case "Digits":
		b := contiguous
		if p.Individual {
			b = isolated
		}
		return splitter{m: runeClass(isN), behavior: b}, nil
	case "Sequence":
		var seq preSequence
		for i, r := range p.Pretokenizers {
			q, err := decodePreTokenizer(r, indexPath(path+".pretokenizers", i), byteLevelSeen)
			if err != nil {
				return nil, err
			}
			if q != nil {
				seq = append(seq, q)
			}
		}
		return seq, nil
	default:
		return nil, unsupported("%s.type %q", path, p.Type)
	}
}
