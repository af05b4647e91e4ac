package inference

import (
	"strings"
	"unicode/utf8"

	"github.com/fedtune/fedtune/model/tokenizer"
)

// textStream turns generated tokens into text pieces safe to send: it
// holds back a tail that may still become a stop sequence or is an
// unfinished UTF-8 character, and ends the text before a stop sequence.
type textStream struct {
	tok     tokenizer.Tokenizer
	stop    []string
	ids     []int
	sent    int  // bytes of the text already handed out
	stopped bool // a stop sequence was met
}

// add appends token id and returns the text now safe to send; stopped
// reports a stop sequence (the text before it is all handed out).
func (s *textStream) add(id int) (piece string, stopped bool) {
	s.ids = append(s.ids, id)
	full := s.tok.Decode(s.ids)
	for _, st := range s.stop {
		if i := strings.Index(full, st); i >= 0 && i >= s.sent {
			s.stopped = true
			return s.take(full, i), true
		}
	}
	safe := len(full)
	for _, st := range s.stop {
		for k := min(len(st)-1, len(full)); k > 0; k-- {
			if strings.HasSuffix(full, st[:k]) {
				safe = min(safe, len(full)-k)
				break
			}
		}
	}
	safe = completeRunes(full[:safe])
	return s.take(full, safe), false
}

// flush returns the text held back, at the end of an answer.
func (s *textStream) flush() string {
	if s.stopped {
		return ""
	}
	return s.take(s.tok.Decode(s.ids), -1)
}

func (s *textStream) take(full string, upto int) string {
	if upto < 0 {
		upto = len(full)
	}
	if upto <= s.sent {
		return ""
	}
	p := full[s.sent:upto]
	s.sent = upto
	return p
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
