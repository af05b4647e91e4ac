package tokenizer

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// decoder turns the tokens of ids back into text pieces, as a
// tokenizer.json "decoder" does (Hugging Face's decode_chain); the pieces
// are joined at the end.
type decoder interface {
	decode(toks []string) []string
}

// byteLevelDecoder maps every token's characters back to bytes (a token
// with a character outside the table keeps its own bytes) and joins them.
// The result may be invalid UTF-8: Hugging Face replaces such bytes by
// U+FFFD here, Decode leaves that to the caller (see ValidUTF8), so that
// any byte string round-trips.
type byteLevelDecoder struct{}

func (byteLevelDecoder) decode(toks []string) []string {
	var b []byte
	for _, t := range toks {
		if !isByteLevel(t) {
			b = append(b, t...)
			continue
		}
		for _, r := range t {
			b = append(b, runeByte[r])
		}
	}
	return []string{string(b)}
}

// byteFallbackDecoder turns runs of <0xXX> tokens into the text of their
// bytes, or one U+FFFD per byte when the run is not valid UTF-8 (as Hugging
// Face's tokenizers does).
type byteFallbackDecoder struct{}

func byteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range []byte(t[3:5]) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

func (byteFallbackDecoder) decode(toks []string) []string {
	var out []string
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			for range run {
				out = append(out, "\uFFFD")
			}
		}
		run = run[:0]
	}
	for _, t := range toks {
		if b, ok := byteToken(t); ok {
			run = append(run, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

type fuseDecoder struct{}

func (fuseDecoder) decode(toks []string) []string { return []string{strings.Join(toks, "")} }

// stripDecoder removes up to start leading and stop trailing copies of
// content from every token.
type stripDecoder struct {
	content     string
	start, stop int
}

func (d stripDecoder) decode(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		for n := 0; n < d.start && d.content != "" && strings.HasPrefix(t, d.content); n++ {
			t = t[len(d.content):]
		}
		for n := 0; n < d.stop && d.content != "" && strings.HasSuffix(t, d.content); n++ {
			t = t[:len(t)-len(d.content)]
		}
		out[i] = t
	}
	return out
}

type replaceDecoder struct {
	m       matcher
	content string
}

func (d replaceDecoder) decode(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		out[i] = replaceAll(d.m, t, d.content)
	}
	return out
}

// metaspaceDecoder turns the replacement character back into spaces and
// drops the space it prepended to the first token.
type metaspaceDecoder struct {
	repl      string
	dropFirst bool
}

func (d metaspaceDecoder) decode(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		t = strings.ReplaceAll(t, d.repl, " ")
		if i == 0 && d.dropFirst {
			t = strings.TrimPrefix(t, " ")
		}
		out[i] = t
	}
	return out
}

type decoderSequence []decoder

func (seq decoderSequence) decode(toks []string) []string {
	for _, d := range seq {
		toks = d.decode(toks)
	}
	return toks
}

type decoderJSON struct {
	Type           string            `json:"type"`
	Decoders       []json.RawMessage `json:"decoders"`
	Pattern        *patternJSON      `json:"pattern"`
	Content        *string           `json:"content"`
	Start          int               `json:"start"`
	Stop           int               `json:"stop"`
	Replacement    *string           `json:"replacement"`
	PrependScheme  *string           `json:"prepend_scheme"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
}

// decodeDecoder reads the decoder at path; nil for JSON null.
func decodeDecoder(raw json.RawMessage, path string) (decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	var d decoderJSON
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, bad("%s: %v", path, err)
	}
	switch d.Type {
	case "ByteLevel":
		return byteLevelDecoder{}, nil
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Strip":
		if d.Content == nil || d.Start < 0 || d.Stop < 0 {
			return nil, bad("%s: want content, start >= 0 and stop >= 0", path)
		}
		return stripDecoder{content: *d.Content, start: d.Start, stop: d.Stop}, nil
	case "Replace":
		m, err := decodePattern(d.Pattern, path+".pattern")
		if err != nil {
			return nil, err
		}
		if d.Content == nil {
			return nil, bad("%s.content: missing", path)
		}
		return replaceDecoder{m: m.matcher, content: *d.Content}, nil
	case "Metaspace":
		md := metaspaceDecoder{repl: "▁", dropFirst: true}
		if d.Replacement != nil {
			md.repl = *d.Replacement
		}
		switch {
		case d.PrependScheme != nil:
			md.dropFirst = *d.PrependScheme != "never"
		case d.AddPrefixSpace != nil:
			md.dropFirst = *d.AddPrefixSpace
		}
		return md, nil
	case "Sequence":
		var seq decoderSequence
		for i, r := range d.Decoders {
			q, err := decodeDecoder(r, indexPath(path+".decoders", i))
			if err != nil {
				return nil, err
			}
			if q != nil {
				seq = append(seq, q)
			}
		}
		return seq, nil
	default:
		return nil, unsupported("%s.type %q", path, d.Type)
	}
}

// ValidUTF8 returns s with every maximal ill-formed subsequence replaced by
// U+FFFD, as the WHATWG UTF-8 decoder (JavaScript's TextDecoder) and Rust's
// from_utf8_lossy do: the text Hugging Face's decoders give where Decode
// returns bytes that are not valid UTF-8.
func ValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError || n > 1 {
			b.WriteString(s[i : i+n])
			i += n
			continue
		}
		b.WriteRune(utf8.RuneError)
		i += maximalSubpart(s[i:])
	}
	return b.String()
}

// maximalSubpart returns the length (at least 1) of the ill-formed
// sequence at the start of s that the WHATWG decoder replaces by one U+FFFD.
func maximalSubpart(s string) int {
	c := s[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c >= 0xE0 && c <= 0xEF:
		need = 2
		if c == 0xE0 {
			lo = 0xA0
		} else if c == 0xED {
			hi = 0x9F
		}
	case c >= 0xF0 && c <= 0xF4:
		need = 3
		if c == 0xF0 {
			lo = 0x90
		} else if c == 0xF4 {
			hi = 0x8F
		}
	default:
		return 1
	}
	n := 1
	for ; n <= need && n < len(s); n++ {
		if s[n] < lo || s[n] > hi {
			return n
		}
		lo, hi = 0x80, 0xBF
	}
	return n
}
