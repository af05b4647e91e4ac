package inference

import (
	"strings"
	"unicode/utf8"

	"github.com/fedtune/fedtune/model/tokenizer"
)

// textStream turns generated tokens into text pieces safe to send: it
// holds back a tail that may still become a stop sequence or is an
// unfinished UTF-8 character, and ends the text before a stop sequence.
//
// It decodes incrementally, so that an answer of n tokens costs O(n)
// decoding, not O(n²): each new token is decoded within a short window of
// the tokens before it (ids[prefix:]), and the text it adds is what that
// window's text has beyond the text of ids[prefix:read]. The window keeps
// the tokens a decoder looks at in context (a SentencePiece decoder strips
// the space of a sequence's first token; byte-fallback tokens join into
// one character), so the pieces join to the whole answer's Decode byte for
// byte. While the window's text ends with an unfinished character, read
// stays put and the next token is decoded with it. A decoder whose text
// for the window's earlier tokens changes as tokens are added (none of
// this project's) falls back to decoding the whole answer.
type textStream struct {
	tok     tokenizer.Tokenizer
	stop    []string
	ids     []int
	text    []byte // the text of ids[:read], decoded so far
	prefix  int    // the window's first token
	read    int    // tokens whose text is in text
	whole   bool   // the window never moves: the decoder is not prefix-stable
	sent    int    // bytes of text already handed out
	stopped bool   // a stop sequence was met
}

// maxPending is how many tokens may wait for an unfinished character
// before their text is taken as it is (a model may emit invalid bytes).
const maxPending = 8

// decode adds the text of the tokens not yet decoded to s.text; unless
// final, it waits while that text ends in an unfinished character.
func (s *textStream) decode(final bool) {
	if s.read == len(s.ids) {
		return
	}
	prev := s.tok.Decode(s.ids[s.prefix:s.read])
	cur := s.tok.Decode(s.ids[s.prefix:])
	if !strings.HasPrefix(cur, prev) {
		// The decoder changed the window's earlier text: decode from the
		// first token from now on, as the whole answer's Decode does.
		s.whole, s.prefix = true, 0
		full := s.tok.Decode(s.ids)
		prev, cur = string(s.text), full
		if !strings.HasPrefix(cur, prev) {
			prev = cur[:min(len(cur), len(prev))] // text already out cannot change
		}
	}
	tail := cur[len(prev):]
	if !final && len(s.ids)-s.read < maxPending && unfinished(tail) {
		return
	}
	s.text = append(s.text, tail...)
	if !s.whole {
		s.prefix = s.read
	}
	s.read = len(s.ids)
}

// add appends token id and returns the text now safe to send; stopped
// reports a stop sequence (the text before it is all handed out).
func (s *textStream) add(id int) (piece string, stopped bool) {
	s.ids = append(s.ids, id)
	s.decode(false)
	// Every stop sequence starts at or after sent: the text held back
	// covers any start of one, so the search is over that short tail.
	tail := string(s.text[s.sent:])
	for _, st := range s.stop {
		if i := strings.Index(tail, st); i >= 0 {
			s.stopped = true
			return s.take(s.sent + i), true
		}
	}
	safe := len(tail)
	for _, st := range s.stop {
		for k := min(len(st)-1, len(tail)); k > 0; k-- {
			if strings.HasSuffix(tail, st[:k]) {
				safe = min(safe, len(tail)-k)
				break
			}
		}
	}
	return s.take(s.sent + completeRunes(tail[:safe])), false
}

// flush returns the text held back, at the end of an answer.
func (s *textStream) flush() string {
	if s.stopped {
		return ""
	}
	s.decode(true)
	return s.take(len(s.text))
}

// take hands out the text up to byte upto.
func (s *textStream) take(upto int) string {
	if upto <= s.sent {
		return ""
	}
	p := string(s.text[s.sent:upto])
	s.sent = upto
	return p
}

// unfinished reports whether s ends in an unfinished UTF-8 sequence or a
// replacement character (a byte-fallback decoder's stand-in for one),
// which a later token may complete.
func unfinished(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return s != "" && r == utf8.RuneError
}

// completeRunes returns the length of s without a trailing unfinished
// UTF-8 sequence or replacement characters (a decoder's stand-in for an
// unfinished one), which later tokens may complete.
func completeRunes(s string) int {
	n := len(s)
	for n > 0 {
		r, size := utf8.DecodeLastRuneInString(s[:n])
		if r != utf8.RuneError {
			break
		}
		n -= size
		if len(s)-n > 8 {
			return len(s) // a real run of invalid bytes: send it
		}
	}
	return n
}

// StopAfter returns how many of the generated token ids the server keeps
// when the request's stop sequences are stop: the count up to and
// including the token whose text completes the first stop sequence met,
// or len(ids) when none is met. fedtune audit receipt --replay uses it to
// check that an answer cut by a stop sequence was cut where one occurs.
func StopAfter(tok tokenizer.Tokenizer, ids []int, stop []string) int {
	if len(stop) == 0 {
		return len(ids)
	}
	s := &textStream{tok: tok, stop: stop}
	for i, id := range ids {
		if _, stopped := s.add(id); stopped {
			return i + 1
		}
	}
	return len(ids)
}
