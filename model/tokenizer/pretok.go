package tokenizer

import (
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
