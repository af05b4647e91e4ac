package digest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	good := Bytes([]byte("fedtune"))
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{good, true},
		{strings.ToUpper(good), false},
		{good[:63], false},
		{good + "0", false},
		{"", false},
		{strings.Repeat("g", 64), false},
		{strings.Repeat("0", 64), true},
	} {
		if got := Valid(tc.in); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.in, got, tc.want)
		}
		err := Check("model", tc.in)
		if (err == nil) != tc.want {
			t.Errorf("Check(%q) = %v, want ok=%v", tc.in, err, tc.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "model: ") {
			t.Errorf("Check error %q does not name the field", err)
		}
	}
}

func TestFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := File(p)
	if err != nil {
		t.Fatal(err)
	}
	// SHA-256("abc") from FIPS 180-2.
	if want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Fatalf("File = %s, want %s", got, want)
	}
	if _, err := File(p + ".missing"); err == nil {
		t.Fatal("File of a missing path succeeded")
	}
}
