package scan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// Kind is what a finding is.
type Kind string

// The kinds of finding.
const (
	KindEmail Kind = "email"
	KindPhone Kind = "phone"
	KindCard  Kind = "card"
	KindIP    Kind = "ip"
	KindTerm  Kind = "term"
)

// Kinds lists every kind, in report order.
var Kinds = []Kind{KindEmail, KindPhone, KindCard, KindIP, KindTerm}

// Finding is one piece of personal data in a sample.
type Finding struct {
	// Sample is the sample's index, from 0 in file order.
	Sample int  `json:"sample"`
	Kind   Kind `json:"kind"`
	// Text is the matched text as the sample has it.
	Text string `json:"text"`
}

// Result is what a scan found: the exact output of `dataset scan --json`.
type Result struct {
	Samples  int       `json:"samples"`
	Findings []Finding `json:"findings"`
}

// Counts returns the number of findings of each kind (every kind present,
// zero or not).
func (r *Result) Counts() map[Kind]int {
	c := make(map[Kind]int, len(Kinds))
	for _, k := range Kinds {
		c[k] = 0
	}
	for _, f := range r.Findings {
		c[f.Kind]++
	}
	return c
}

// Format is a file's sample layout.
type Format string

// The formats Scan reads.
const (
	FormatText  Format = "text"
	FormatJSONL Format = "jsonl"
)

// Limits on what Scan and ParseTerms accept.
const (
	MaxTerms   = 10000
	MaxTermLen = 256
	// MaxLine bounds one sample (a line) in bytes.
	MaxLine = 16 << 20
)

// ErrFormat wraps every error about the content of a scanned or terms file.
var ErrFormat = errors.New("scan: bad input")

// Scanner finds personal data in strings. It is safe for concurrent use.
type Scanner struct {
	terms []*regexp.Regexp

	// Progress, if set before Scan, is called now and then during a scan
	// with the bytes of the file read so far.
	Progress func(done int)
}

// New returns a Scanner that also finds the given terms (see the package
// doc); each must be non-empty valid UTF-8 without line breaks, at most
// MaxTermLen bytes.
func New(terms []string) (*Scanner, error) {
	if len(terms) > MaxTerms {
		return nil, fmt.Errorf("scan: %d terms, limit %d: %w", len(terms), MaxTerms, ErrFormat)
	}
	s := &Scanner{}
	for i, t := range terms {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
			return nil, fmt.Errorf("scan: term %d is empty: %w", i+1, ErrFormat)
		case len(t) > MaxTermLen:
			return nil, fmt.Errorf("scan: term %d is %d bytes, limit %d: %w", i+1, len(t), MaxTermLen, ErrFormat)
		case !utf8.ValidString(t):
			return nil, fmt.Errorf("scan: term %d is not valid UTF-8: %w", i+1, ErrFormat)
		case strings.ContainsAny(t, "\r\n"):
			return nil, fmt.Errorf("scan: term %d has a line break: %w", i+1, ErrFormat)
		}
		words := strings.Fields(t)
		for j, w := range words {
			words[j] = regexp.QuoteMeta(w)
		}
		re, err := regexp.Compile(`(?i)` + strings.Join(words, `\s+`))
		if err != nil {
			return nil, fmt.Errorf("scan: term %d: %v: %w", i+1, err, ErrFormat)
		}
		s.terms = append(s.terms, re)
	}
	return s, nil
}

// ParseTerms reads a terms file: one term per line, blank lines and lines
// starting with "#" skipped. Errors name the line.
func ParseTerms(data []byte) ([]string, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var out []string
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !utf8.ValidString(line) {
			return nil, fmt.Errorf("scan: terms line %d: not valid UTF-8: %w", n+1, ErrFormat)
		}
		if strings.ContainsRune(line, '\r') {
			return nil, fmt.Errorf("scan: terms line %d: a carriage return inside the line: %w", n+1, ErrFormat)
		}
		if len(line) > MaxTermLen {
			return nil, fmt.Errorf("scan: terms line %d: %d bytes, limit %d: %w", n+1, len(line), MaxTermLen, ErrFormat)
		}
		if len(out) == MaxTerms {
			return nil, fmt.Errorf("scan: terms line %d: more than %d terms: %w", n+1, MaxTerms, ErrFormat)
		}
		out = append(out, line)
	}
	return out, nil
}

// Find returns what s holds, in order of position: (kind, matched text).
func (sc *Scanner) Find(s string) []Finding {
	ms := sc.find(s)
	out := make([]Finding, len(ms))
	for i, m := range ms {
		out[i] = Finding{Kind: m.kind, Text: s[m.start:m.end]}
	}
	return out
}

func (sc *Scanner) find(s string) []match {
	var pii []match
	pii = findEmails(s, pii)
	pii = findCards(s, pii)
	pii = findIPv4(s, pii)
	pii = findIPv6(s, pii)
	pii = findIntlPhones(s, pii)
	pii = findNationalPhones(s, pii)
	out := keepLongest(pii)
	var terms []match
	for _, re := range sc.terms {
		for _, loc := range re.FindAllStringIndex(s, -1) {
			if p := runeBefore(s, loc[0]); p >= 0 && isWord(p) {
				continue
			}
			if n := runeAfter(s, loc[1]); n >= 0 && isWord(n) {
				continue
			}
			terms = append(terms, match{KindTerm, loc[0], loc[1]})
		}
	}
	out = append(out, keepLongest(terms)...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].start != out[j].start {
			return out[i].start < out[j].start
		}
		return out[i].kind < out[j].kind
	})
	return out
}

// kindRank orders kinds for ties between equally long overlapping matches.
var kindRank = map[Kind]int{KindEmail: 0, KindCard: 1, KindIP: 2, KindPhone: 3, KindTerm: 4}

// keepLongest drops every match that overlaps a longer one (or an equally
// long one of an earlier kind, or the same span found twice).
func keepLongest(ms []match) []match {
	sort.SliceStable(ms, func(i, j int) bool {
		li, lj := ms[i].end-ms[i].start, ms[j].end-ms[j].start
		if li != lj {
			return li > lj
		}
		if kindRank[ms[i].kind] != kindRank[ms[j].kind] {
			return kindRank[ms[i].kind] < kindRank[ms[j].kind]
		}
		return ms[i].start < ms[j].start
	})
	// kept stays sorted by start; kept spans never overlap.
	var kept []match
	for _, m := range ms {
		i := sort.Search(len(kept), func(i int) bool { return kept[i].end > m.start })
		if i < len(kept) && kept[i].start < m.end {
			continue
		}
		kept = slices.Insert(kept, i, m)
	}
	return kept
}

// DetectFormat returns the layout of a file named name with content data:
// JSONL for a .jsonl or .ndjson name, or when every non-empty line is a JSON
// object (and there is one); text otherwise.
func DetectFormat(name string, data []byte) Format {
	if strings.HasSuffix(name, ".jsonl") || strings.HasSuffix(name, ".ndjson") {
		return FormatJSONL
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	records := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if line[0] != '{' || !json.Valid(line) {
			return FormatText
		}
		records++
	}
	if records == 0 {
		return FormatText
	}
	return FormatJSONL
}

// Scan scans every sample of data, read as format (DetectFormat's, or
// given). name is used in errors ("name:line: …"). Invalid UTF-8 and, in
// JSONL, a line that is not one JSON object are errors.
func (sc *Scanner) Scan(name string, data []byte, format Format) (*Result, error) {
	if format != FormatText && format != FormatJSONL {
		return nil, fmt.Errorf("scan %s: unknown format %q (want text or jsonl): %w", name, format, ErrFormat)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	res := &Result{Findings: []Finding{}}
	lineNo, total := 0, len(data)
	for len(data) > 0 {
		lineNo++
		if sc.Progress != nil && lineNo%4096 == 0 {
			sc.Progress(total - len(data))
		}
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if len(line) > MaxLine {
			return nil, fmt.Errorf("scan %s:%d: line is %d bytes, limit %d: %w", name, lineNo, len(line), MaxLine, ErrFormat)
		}
		if !utf8.Valid(line) {
			return nil, fmt.Errorf("scan %s:%d: not valid UTF-8: %w", name, lineNo, ErrFormat)
		}
		idx := res.Samples
		add := func(s string) {
			for _, f := range sc.Find(s) {
				f.Sample = idx
				res.Findings = append(res.Findings, f)
			}
		}
		if format == FormatText {
			add(string(line))
		} else {
			strs, err := recordStrings(line)
			if err != nil {
				return nil, fmt.Errorf("scan %s:%d: %v: %w", name, lineNo, err, ErrFormat)
			}
			for _, s := range strs {
				add(s)
			}
		}
		res.Samples++
	}
	return res, nil
}

// recordStrings returns every string of one JSON object line, keys
// included, in document order.
func recordStrings(line []byte) ([]string, error) {
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, errors.New("record is not a JSON object")
	}
	if !json.Valid(trimmed) {
		var v any
		err := json.Unmarshal(trimmed, &v)
		return nil, fmt.Errorf("bad JSON: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var out []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("bad JSON: %v", err)
		}
		if s, ok := tok.(string); ok {
			out = append(out, s)
		}
	}
}
