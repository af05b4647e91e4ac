package scan

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzScan feeds arbitrary files to Scan in both formats: it must not
// panic, every finding must name a sample that exists and hold text that
// the file (or, in JSONL, a decoded string) has, and a finding of the
// first four kinds is found again in its own text.
func FuzzScan(f *testing.F) {
	for _, p := range []string{"testdata/planted.txt", "testdata/nearmiss.txt"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			f.Add(line)
		}
	}
	f.Add([]byte(`{"a":["x@example.com",{"b":"+44 20 7946 0958"}]}`))
	sc := mustScanner(f, "john smith", "acme")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []Format{FormatText, FormatJSONL} {
			r, err := sc.Scan("fuzz", data, format)
			if err != nil {
				continue
			}
			last := -1
			for _, x := range r.Findings {
				if x.Sample < 0 || x.Sample >= r.Samples || x.Sample < last {
					t.Fatalf("%s: finding %+v outside samples 0..%d or out of order", format, x, r.Samples)
				}
				last = x.Sample
				if x.Text == "" || !utf8.ValidString(x.Text) {
					t.Fatalf("%s: finding %+v has empty or invalid text", format, x)
				}
				if format == FormatText && !strings.Contains(string(data), x.Text) {
					t.Fatalf("finding %+v is not in the data", x)
				}
				if x.Kind == KindTerm {
					continue
				}
				again := sc.Find(x.Text)
				if len(again) == 0 || again[0].Kind != x.Kind || again[0].Text != x.Text {
					t.Fatalf("%s: finding %+v is not found again in its own text: %v", format, x, again)
				}
			}
		}
	})
}

// FuzzParseTerms: any terms file either fails with an error or gives terms
// New accepts.
func FuzzParseTerms(f *testing.F) {
	f.Add([]byte("# names\njohn smith\n\nMüller\r\n"))
	f.Add([]byte("\xef\xbb\xbfa\n\xff\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := ParseTerms(data)
		if err != nil {
			return
		}
		if _, err := New(ts); err != nil {
			t.Fatalf("ParseTerms gave %q, which New refuses: %v", ts, err)
		}
	})
}
