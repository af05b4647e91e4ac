package scan

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func mustScanner(t testing.TB, terms ...string) *Scanner {
	t.Helper()
	sc, err := New(terms)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func scanFile(t *testing.T, sc *Scanner, path string) *Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sc.Scan(path, data, DetectFormat(path, data))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestPlanted scans a made-up file with personal data of every kind in
// several formats each and checks that exactly that is found.
func TestPlanted(t *testing.T) {
	terms, err := os.ReadFile("testdata/planted.terms")
	if err != nil {
		t.Fatal(err)
	}
	ts, err := ParseTerms(terms)
	if err != nil {
		t.Fatal(err)
	}
	r := scanFile(t, mustScanner(t, ts...), "testdata/planted.txt")
	want := []Finding{
		{0, KindEmail, "alice.smith@example.com"},
		{1, KindEmail, "bob_jones+news@mail.example.co.uk"},
		{1, KindEmail, "j.doe99@sub.example.org"},
		{2, KindEmail, "renée.dupont@exemple.fr"},
		{3, KindPhone, "+1 (415) 555-2671"},
		{4, KindPhone, "+44 20 7946 0958"},
		{4, KindPhone, "+44 (0)20 7946 0958"},
		{5, KindPhone, "+49 30 12345678"},
		{5, KindPhone, "+33 1 23 45 67 89"},
		{5, KindPhone, "+91 98765 43210"},
		{6, KindPhone, "(555) 123-4567"},
		{6, KindPhone, "555-123-4567"},
		{6, KindPhone, "555.123.4567"},
		{6, KindPhone, "1-800-555-0199"},
		{7, KindPhone, "07911 123456"},
		{7, KindPhone, "020 7946 0958"},
		{7, KindPhone, "0161 496 0000"},
		{8, KindPhone, "030 12345678"},
		{8, KindPhone, "089/1234567"},
		{8, KindPhone, "0171-1234567"},
		{9, KindPhone, "01 23 45 67 89"},
		{9, KindPhone, "06.12.34.56.78"},
		{9, KindPhone, "06-12-34-56-78"},
		{9, KindPhone, "0612345678"},
		{10, KindPhone, "98765 43210"},
		{10, KindPhone, "098765 43210"},
		{11, KindCard, "4111 1111 1111 1111"},
		{11, KindCard, "5500-0000-0000-0004"},
		{12, KindCard, "3782 822463 10005"},
		{12, KindCard, "6011111111111117"},
		{12, KindCard, "3530111333300000"},
		{13, KindCard, "4012888888881881"},
		{13, KindCard, "3056 930902 5904"},
		{14, KindIP, "192.168.1.20"},
		{14, KindIP, "10.0.0.1:8080"},
		{15, KindIP, "172.16.0.0/12"},
		{15, KindIP, "8.8.8.8"},
		{16, KindIP, "2001:db8::8a2e:370:7334"},
		{16, KindIP, "fe80::1ff:fe23:4567:890a"},
		{17, KindIP, "2001:0db8:85a3:0000:0000:8a2e:0370:7334"},
		{17, KindIP, "::ffff:192.0.2.128"},
		{18, KindTerm, "John Smith"},
		{18, KindTerm, "Müller"},
		{19, KindTerm, "Acme Corp"},
	}
	if r.Samples != 20 {
		t.Errorf("samples = %d, want 20", r.Samples)
	}
	if !slices.Equal(r.Findings, want) {
		for _, f := range r.Findings {
			if !slices.Contains(want, f) {
				t.Errorf("unexpected finding %+v", f)
			}
		}
		for _, f := range want {
			if !slices.Contains(r.Findings, f) {
				t.Errorf("missed %+v", f)
			}
		}
		if !t.Failed() {
			t.Errorf("findings out of order:\n got %v\nwant %v", r.Findings, want)
		}
	}
	c := r.Counts()
	for _, k := range Kinds {
		if c[k] < 3 {
			t.Errorf("planted set has %d findings of kind %s; want several formats of each", c[k], k)
		}
	}
	t.Logf("planted: %d samples, %d findings, recall %d/%d", r.Samples, len(r.Findings), len(r.Findings), len(want))
}

// TestNearMisses: versions, dates, times, decimals, hashes, ISBNs, bad
// check digits and ordinary numbers are not personal data.
func TestNearMisses(t *testing.T) {
	r := scanFile(t, mustScanner(t), "testdata/nearmiss.txt")
	for _, f := range r.Findings {
		t.Errorf("near miss flagged: sample %d %s %q", f.Sample, f.Kind, f.Text)
	}
	lines := []string{
		"version 10.0.0.1", "v1.2.3.4", "1.2.3.4.5", "10.0.0.1.2", "999.1.1.1", "01.02.03.04",
		"4111 1111 1111 1112", "4111-1111 1111-1111", "41111 1111 1111 111",
		"x4111111111111111", "4111111111111111x", "4111111111111111.5",
		"+0 123 456 789", "+12 34", "+1.5", "3 +4", "(155) 123-4567", "555-123-45678", "0555-123-4567-1",
		"98765-43210", "60000-70000", "1234567890", "2024 1234 5678",
		"a@b", "@@x.com", "x@.com", "x@y..com", "x.@y.com", "x@-y.com", "x@y.c0m",
		"fe80:1", "1::", "::1", "::", "dead::beef", "std::string::npos", "12:34:56:78",
		"Smithers", "johnsmith",
	}
	sc := mustScanner(t, "smith", "john smith")
	for _, l := range lines {
		if fs := sc.Find(l); len(fs) > 0 {
			t.Errorf("Find(%q) = %v, want nothing", l, fs)
		}
	}
}

// TestShippedData scans every dataset the project ships: nothing there is
// personal data, so every finding is a false positive.
func TestShippedData(t *testing.T) {
	files, err := filepath.Glob("../testdata/*/*")
	if err != nil {
		t.Fatal(err)
	}
	sc := mustScanner(t)
	samples, findings, scanned := 0, 0, 0
	for _, f := range files {
		if !strings.HasSuffix(f, ".txt") && !strings.HasSuffix(f, ".jsonl") {
			continue
		}
		scanned++
		r := scanFile(t, sc, f)
		samples += r.Samples
		findings += len(r.Findings)
		for _, x := range r.Findings {
			t.Errorf("%s: sample %d: false positive %s %q", f, x.Sample, x.Kind, x.Text)
		}
	}
	if samples < 1000 {
		t.Fatalf("scanned only %d samples of shipped data; the globs missed the data", samples)
	}
	t.Logf("shipped data: %d files, %d samples, %d findings: false-positive rate %d/%d = %.4f", scanned, samples, findings, findings, samples, float64(findings)/float64(samples))
}

func TestJSONLEveryString(t *testing.T) {
	data := []byte(`{"messages":[{"role":"user","content":"mail a@example.com"},{"role":"assistant","content":"ok"}]}

{"prompt":"call +44 20 7946 0958","response":"done","meta":{"ip":"192.0.2.7","n":4111111111111111}}
{"bob@example.org":1}
`)
	if got := DetectFormat("data.txt", data); got != FormatJSONL {
		t.Fatalf("DetectFormat = %s, want jsonl", got)
	}
	r, err := mustScanner(t).Scan("data.txt", data, FormatJSONL)
	if err != nil {
		t.Fatal(err)
	}
	want := []Finding{{0, KindEmail, "a@example.com"}, {1, KindPhone, "+44 20 7946 0958"}, {1, KindIP, "192.0.2.7"}, {2, KindEmail, "bob@example.org"}}
	if r.Samples != 3 || !slices.Equal(r.Findings, want) {
		t.Errorf("got %d samples %v, want 3 %v (numbers are not strings)", r.Samples, r.Findings, want)
	}
}

func TestDetectFormat(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       Format
	}{
		{"a.jsonl", "not json", FormatJSONL},
		{"a.ndjson", "", FormatJSONL},
		{"a.txt", `{"a":1}` + "\n\n" + `{"b":"x"}`, FormatJSONL},
		{"a.txt", `{"a":1}` + "\nplain", FormatText},
		{"a.txt", "[1,2]", FormatText},
		{"a.txt", "", FormatText},
		{"a", "{broken", FormatText},
	} {
		if got := DetectFormat(tc.name, []byte(tc.data)); got != tc.want {
			t.Errorf("DetectFormat(%q, %q) = %s, want %s", tc.name, tc.data, got, tc.want)
		}
	}
}

func TestScanErrors(t *testing.T) {
	sc := mustScanner(t)
	for _, tc := range []struct {
		name, data string
		format     Format
		want       string
	}{
		{"bad utf8", "ok\nbad \xff\n", FormatText, "x:2: not valid UTF-8"},
		{"not object", "{\"a\":\"b\"}\n[1]\n", FormatJSONL, "x:2: record is not a JSON object"},
		{"bad json", "{\"a\":\n", FormatJSONL, "x:1: bad JSON"},
		{"trailing", "{\"a\":1} {\"b\":2}\n", FormatJSONL, "x:1: bad JSON"},
		{"format", "a", Format("csv"), "unknown format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sc.Scan("x", []byte(tc.data), tc.format)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrFormat) {
				t.Errorf("err = %v, want one containing %q wrapping ErrFormat", err, tc.want)
			}
		})
	}
}

func TestTerms(t *testing.T) {
	sc := mustScanner(t, "Ann", "ann  marie", "O'Brien", "c++")
	got := sc.Find("ANN and Ann-Marie met ann\tMarie, annabel, Joann, o'brien, C++ users.")
	want := []Finding{{0, KindTerm, "ANN"}, {0, KindTerm, "Ann"}, {0, KindTerm, "ann\tMarie"}, {0, KindTerm, "o'brien"}, {0, KindTerm, "C++"}}
	if !slices.Equal(got, want) {
		t.Errorf("Find = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		data, want string
	}{
		{"a\n\n\n", "term"},
		{"ok\n" + strings.Repeat("x", MaxTermLen+1), "terms line 2"},
		{"ok\n\xff\n", "terms line 2: not valid UTF-8"},
	} {
		ts, err := ParseTerms([]byte(tc.data))
		if tc.want == "term" {
			if err != nil || !slices.Equal(ts, []string{"a"}) {
				t.Errorf("ParseTerms(%q) = %v, %v", tc.data, ts, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTerms(%q) error %v, want %q", tc.data, err, tc.want)
		}
	}
	if _, err := New([]string{" "}); err == nil {
		t.Error("New accepted an empty term")
	}
}

func TestLuhn(t *testing.T) {
	for _, tc := range []struct {
		d    string
		want bool
	}{{"79927398713", true}, {"79927398710", false}, {"4111111111111111", true}, {"", false}, {"12a", false}, {"0", true}} {
		if got := Luhn(tc.d); got != tc.want {
			t.Errorf("Luhn(%q) = %v, want %v", tc.d, got, tc.want)
		}
	}
}

func TestResultJSON(t *testing.T) {
	r, err := mustScanner(t).Scan("x", []byte("nothing here\n"), FormatText)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	if string(b) != `{"samples":1,"findings":[]}` {
		t.Errorf("JSON = %s", b)
	}
}
