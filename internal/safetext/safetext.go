package safetext

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Error describes the first character Check refused.
type Error struct {
	// Char is the 1-based position of the character among the string's characters.
	Char int
	// Byte is the 0-based byte offset of the character.
	Byte int
	// Rune is the refused character (utf8.RuneError for invalid UTF-8).
	Rune rune
	// Kind says why it is refused, e.g. "bidi control".
	Kind string
}

func (e *Error) Error() string {
	if e.Kind == "invalid UTF-8" {
		return fmt.Sprintf("invalid UTF-8 at character %d (byte %d)", e.Char, e.Byte)
	}
	return fmt.Sprintf("%s %U at character %d (byte %d)", e.Kind, e.Rune, e.Char, e.Byte)
}

// Check returns nil if s holds only characters safe to show, or an *Error
// naming the first one that is not and its position.
func Check(s string) error {
	char := 0
	for i, r := range s {
		char++
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return &Error{Char: char, Byte: i, Rune: r, Kind: "invalid UTF-8"}
			}
		}
		if k := Kind(r); k != "" {
			return &Error{Char: char, Byte: i, Rune: r, Kind: k}
		}
	}
	return nil
}

// Kind returns why r is refused ("control character", "bidi control",
// "zero-width character", "line separator"), or "" if it is allowed.
func Kind(r rune) string {
	switch {
	case unicode.IsControl(r):
		return "control character"
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return "bidi control"
	case r >= 0x200b && r <= 0x200d, r == 0x2060, r == 0xfeff:
		return "zero-width character"
	case r == 0x2028, r == 0x2029:
		return "line separator"
	}
	return ""
}
