package artifact

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	good := DigestOf([]byte("hello"))
	tests := []struct {
		name, in, want, errHas string
	}{
		{"bare", good, good, ""},
		{"prefixed", "sha256:" + good, good, ""},
		{"empty", "", "", "0 characters"},
		{"short", good[:63], "", "63 characters"},
		{"long", good + "0", "", "65 characters"},
		{"upper", strings.ToUpper(good), "", "upper-case"},
		{"non-hex", "g" + good[1:], "", "not hex"},
		{"other algorithm", "sha512:" + good, "", "characters"},
		{"path", "../" + good[3:], "", "not hex"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDigest(tc.in)
			if tc.errHas == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseDigest(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, ErrBadDigest) || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("ParseDigest(%q) error = %v; want ErrBadDigest mentioning %q", tc.in, err, tc.errHas)
			}
		})
	}
}

func FuzzParseDigest(f *testing.F) {
	f.Add(DigestOf(nil))
	f.Add("sha256:" + DigestOf([]byte("x")))
	f.Add("SHA256:00")
	f.Add(strings.Repeat("A", 64))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			if !errors.Is(err, ErrBadDigest) {
				t.Fatalf("error %v does not wrap ErrBadDigest", err)
			}
			return
		}
		if len(d) != DigestLen || strings.TrimLeft(d, "0123456789abcdef") != "" {
			t.Fatalf("ParseDigest(%q) accepted non-canonical %q", s, d)
		}
		if d2, err := ParseDigest(d); err != nil || d2 != d {
			t.Fatalf("canonical form %q does not round-trip: %q, %v", d, d2, err)
		}
		if s != d && s != DigestPrefix+d {
			t.Fatalf("ParseDigest(%q) = %q: accepted a string that is neither form", s, d)
		}
	})
}
