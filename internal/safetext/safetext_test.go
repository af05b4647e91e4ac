package safetext

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		char int
	}{
		{"benign-data", "", 0},
		{"Llama 3.1 8B — instruct (ü, 日本語)", "", 0},
		{"", "", 0},
		{"a\x00b", "control character U+0000 at character 2 (byte 1)", 2},
		{"a\tb", "control character U+0009 at character 2 (byte 1)", 2},
		{"a\nb", "control character U+000A at character 2 (byte 1)", 2},
		{"x\x7f", "control character U+007F at character 2 (byte 1)", 2},
		{"é\u0085", "control character U+0085 at character 2 (byte 2)", 2},
		{"evil\u202Eatad-", "bidi control U+202E at character 5 (byte 4)", 5},
		{"\u202Ax", "bidi control U+202A at character 1 (byte 0)", 1},
		{"ab\u2066", "bidi control U+2066 at character 3 (byte 2)", 3},
		{"ab\u2069", "bidi control U+2069 at character 3 (byte 2)", 3},
		{"\u200E", "bidi control U+200E at character 1 (byte 0)", 1},
		{"\u200F", "bidi control U+200F at character 1 (byte 0)", 1},
		{"\u061C", "bidi control U+061C at character 1 (byte 0)", 1},
		{"da\u200Bta", "zero-width character U+200B at character 3 (byte 2)", 3},
		{"da\u200Dta", "zero-width character U+200D at character 3 (byte 2)", 3},
		{"da\u2060ta", "zero-width character U+2060 at character 3 (byte 2)", 3},
		{"\uFEFFdata", "zero-width character U+FEFF at character 1 (byte 0)", 1},
		{"a\u2028b", "line separator U+2028 at character 2 (byte 1)", 2},
		{"ab\xffc", "invalid UTF-8 at character 3 (byte 2)", 3},
		{"\uFFFD", "", 0}, // the replacement character itself is a real character
	} {
		err := Check(tc.in)
		if tc.want == "" {
			if err != nil {
				t.Errorf("Check(%q) = %v, want nil", tc.in, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || err.Error() != tc.want || e.Char != tc.char {
			t.Errorf("Check(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}
