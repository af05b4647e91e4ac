package tokenizer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/quick"
	"unicode/utf8"
)

func TestByteRoundTrip(t *testing.T) {
	var b Byte
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, s := range []string{"", "hello", "héllo wörld ✓", "\xff\xfe\x00bad \xc3\x28 utf8", string(all)} {
		ids := b.Encode(s)
		if len(ids) != len(s) {
			t.Errorf("%q: %d ids for %d bytes", s, len(ids), len(s))
		}
		for _, id := range ids {
			if id < 0 || id >= b.VocabSize() {
				t.Fatalf("id %d out of range", id)
			}
		}
		if got := b.Decode(ids); got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
	if err := quick.Check(func(p []byte) bool { return b.Decode(b.Encode(string(p))) == string(p) }, nil); err != nil {
		t.Error(err)
	}
	if got := b.Decode([]int{'a', -1, 256, 1 << 40, 'b'}); got != "ab" {
		t.Errorf("Decode skipped ids wrongly: %q", got)
	}
}

func TestLoad(t *testing.T) {
	empty := t.TempDir()
	tests := []struct {
		name      string
		dir       string
		vocab     int
		wantSize  int
		wantBPE   bool
		wantError string
	}{
		{"no tokenizer.json", empty, 256, 256, false, ""},
		{"byte tokenizer, bigger model vocab", empty, 512, 512, false, ""},
		{"empty dir name", "", 300, 300, false, ""},
		{"byte tokenizer vocab too small", empty, 255, 0, false, "vocab_size >= 256"},
		{"bpe", "testdata/gpt2style", 267, 267, true, ""},
		{"bpe in bigger model vocab", "testdata/gpt2style", 1000, 267, true, ""},
		{"bpe vocab too small", "testdata/gpt2style", 266, 0, false, "do not fit"},
		{"missing dir", filepath.Join(empty, "nope"), 256, 0, false, "no such file"},
		{"file, not dir", "testdata/gpt2style/tokenizer.json", 256, 0, false, "not a folder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Load(tc.dir, tc.vocab)
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("err = %v, want %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.VocabSize() != tc.wantSize {
				t.Errorf("VocabSize = %d, want %d", tok.VocabSize(), tc.wantSize)
			}
			if _, ok := tok.(*BPE); ok != tc.wantBPE {
				t.Errorf("got %T", tok)
			}
		})
	}
	if _, err := Load(empty, 10); !errors.Is(err, ErrVocabSize) {
		t.Errorf("err = %v, want ErrVocabSize", err)
	}
}

func loadGPT2Style(t testing.TB) *BPE {
	t.Helper()
	data, err := os.ReadFile("testdata/gpt2style/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := DecodeBPE(data)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestBPEEncode(t *testing.T) {
	tok := loadGPT2Style(t)
	if !tok.CoversBytes() {
		t.Fatal("CoversBytes = false")
	}
	// Expected ids worked out by hand from the merges in the file:
	// 256 at, 257 Ġt, 258 he, 259 Ġthe, 260 Ġm, 261 Ġmat, 262 cat, 263 Ġs,
	// 264 Ġsat, 265 ĊĊ, 266 <|endoftext|>; single bytes are their value.
	tests := []struct {
		in   string
		want []int
	}{
		{"the cat sat on the mat", []int{'t', 258, ' ', 262, 264, ' ', 'o', 'n', 259, 261}},
		{"hi<|endoftext|>the", []int{'h', 'i', 266, 't', 258}},
		{"<|endoftext|><|endoftext|>", []int{266, 266}},
		{"a\n\n", []int{'a', 265}},
		{"\n\n\nx", []int{265, '\n', 'x'}},
		{"tat", []int{'t', 256}},
		{"", nil},
		{"\xff", []int{0xff}},
		{"é", []int{0xc3, 0xa9}},
	}
	for _, tc := range tests {
		got := tok.Encode(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Encode(%q) = %v, want %v", tc.in, got, tc.want)
		}
		if dec := tok.Decode(got); dec != tc.in {
			t.Errorf("Decode(Encode(%q)) = %q", tc.in, dec)
		}
	}
	if got := tok.Decode([]int{259, -5, 9999, 261}); got != " the mat" {
		t.Errorf("Decode = %q", got)
	}
	if err := quick.Check(func(p []byte) bool { return tok.Decode(tok.Encode(string(p))) == string(p) }, nil); err != nil {
		t.Error(err)
	}
}

func TestByteLevelTable(t *testing.T) {
	// Fixed points of GPT-2's table that every byte-level tokenizer relies on.
	for b, r := range map[byte]rune{' ': 'Ġ', '\n': 'Ċ', 'a': 'a', 0: 'Ā', 0xad: 'Ń', 0xff: 'ÿ', 0x7f: 'ġ'} {
		if byteRune[b] != r {
			t.Errorf("byte %#x -> %q, want %q", b, byteRune[b], r)
		}
	}
	seen := map[rune]bool{}
	for _, r := range byteRune {
		if seen[r] {
			t.Fatalf("rune %q used twice", r)
		}
		seen[r] = true
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		fn   func(string) []string
		in   string
		want []string
	}{
		{splitGPT2, "Hello world's 12345 !!\n\n  x", []string{"Hello", " world", "'s", " 12345", " !!", "\n\n ", " x"}},
		{splitGPT2, "I'M here  ", []string{"I", "'", "M", " here", "  "}},
		{splitGPT2, "a\tb", []string{"a", "\t", "b"}},
		{splitGPT2, "x \xffy", []string{"x", " \xff", "y"}},
		{splitLlama3, "Hello world's 12345 !!\n\n  x", []string{"Hello", " world", "'s", " ", "123", "45", " !!\n\n", " ", " x"}},
		{splitLlama3, "I'M (here)\n  \n z", []string{"I", "'M", " (", "here", ")\n", "  \n", " z"}},
		{splitLlama3, "a(b) x!y", []string{"a", "(b", ")", " x", "!y"}},
		{splitLlama3, "ünïcode 3.14", []string{"ünïcode", " ", "3", ".", "14"}},
		{splitLlama3, "end   ", []string{"end", "   "}},
	}
	for _, tc := range tests {
		got := tc.fn(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if err := quick.Check(func(p []byte) bool {
		return strings.Join(splitGPT2(string(p)), "") == string(p) && strings.Join(splitLlama3(string(p)), "") == string(p)
	}, nil); err != nil {
		t.Error(err)
	}
}

// edit returns the test tokenizer.json with old replaced by new (once).
func edit(t testing.TB, old, new string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/gpt2style/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("tokenizer.json has no %q", old)
	}
	return bytes.Replace(data, []byte(old), []byte(new), 1)
}

func TestDecodeBPEVariants(t *testing.T) {
	llama3 := `{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": ` +
		jsonString(llama3Pattern) + `}, "behavior": "Isolated", "invert": false},` +
		`{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}`
	pre := `{
    "type": "ByteLevel",
    "add_prefix_space": false,
    "trim_offsets": true,
    "use_regex": true
  }`
	tok, err := DecodeBPE(edit(t, pre, llama3))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tok.Encode("the cat's"), []int{'t', 258, ' ', 262, '\'', 's'}; !reflect.DeepEqual(got, want) {
		t.Errorf("LLaMA 3 style Encode = %v, want %v", got, want)
	}
	// Merges as pairs, the newer tokenizers format.
	tok, err = DecodeBPE(edit(t, `"a t",`, `["a", "t"],`))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("cat"); !reflect.DeepEqual(got, []int{262}) {
		t.Errorf("Encode(cat) = %v", got)
	}
	// add_prefix_space.
	tok, err = DecodeBPE(edit(t, `"add_prefix_space": false`, `"add_prefix_space": true`))
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string][]int{
		"mat":                           {261},
		" mat":                          {261},
		"a<|endoftext|>mat":             {' ', 'a', 266, 261},
		"<|endoftext|>the cat":          {266, 259, ' ', 262},
		"the<|endoftext|><|endoftext|>": {259, 266, 266},
	} {
		if got := tok.Encode(in); !reflect.DeepEqual(got, want) {
			t.Errorf("prefix-space Encode(%q) = %v, want %v", in, got, want)
		}
	}
	// With a Split first, every piece gets the space.
	tok, err = DecodeBPE(edit(t, pre, strings.Replace(llama3, `"add_prefix_space": false`, `"add_prefix_space": true`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	// Pieces "the", ".mat" become " the", " .mat".
	if got, want := tok.Encode("the.mat"), []int{259, ' ', '.', 'm', 256}; !reflect.DeepEqual(got, want) {
		t.Errorf("Split + prefix-space Encode = %v, want %v", got, want)
	}
	// ignore_merges: a whole pre-token found in the vocab is one id.
	tok, err = DecodeBPE(edit(t, `"fuse_unk": false`, `"ignore_merges": true`))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode(" mat"); !reflect.DeepEqual(got, []int{261}) {
		t.Errorf("ignore_merges Encode = %v", got)
	}
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func TestDecodeBPEErrors(t *testing.T) {
	tests := []struct {
		name     string
		data     []byte
		sentinel error
		want     string
	}{
		{"not json", []byte("{"), ErrBadTokenizer, "unexpected end"},
		{"no model", []byte(`{"decoder":{"type":"ByteLevel"},"pre_tokenizer":{"type":"ByteLevel"}}`), ErrBadTokenizer, "no model"},
		{"wordpiece", edit(t, `"type": "BPE"`, `"type": "WordPiece"`), ErrUnsupported, `model.type "WordPiece"`},
		{"normalizer", edit(t, `"normalizer": null`, `"normalizer": {"type":"Precompiled"}`), ErrUnsupported, `normalizer.type "Precompiled"`},
		{"nested normalizer", edit(t, `"normalizer": null`, `"normalizer": {"type":"Sequence","normalizers":[{"type":"NFC"},{"type":"BertNormalizer"}]}`), ErrUnsupported, `normalizer.normalizers[1].type "BertNormalizer"`},
		{"bad regex", edit(t, `"normalizer": null`, `"normalizer": {"type":"Replace","pattern":{"Regex":"(("},"content":""}`), ErrUnsupported, `normalizer.pattern.Regex "(("`},
		{"dropout", edit(t, `"dropout": null`, `"dropout": 0.1`), ErrUnsupported, "dropout"},
		{"post-processor", edit(t, `"post_processor": {
    "type": "ByteLevel"`, `"post_processor": {
    "type": "RobertaProcessing"`), ErrUnsupported, `post_processor.type "RobertaProcessing"`},
		{"truncation", edit(t, `"truncation": null`, `"truncation": {"max_length": 5}`), ErrUnsupported, "truncation"},
		{"suffix", edit(t, `"end_of_word_suffix": ""`, `"end_of_word_suffix": "</w>"`), ErrUnsupported, "end_of_word_suffix"},
		{"decoder", edit(t, `"decoder": {
    "type": "ByteLevel"`, `"decoder": {
    "type": "WordPiece"`), ErrUnsupported, "decoder"},
		{"pre-tokenizer", edit(t, `"pre_tokenizer": {
    "type": "ByteLevel"`, `"pre_tokenizer": {
    "type": "Whitespace"`), ErrUnsupported, `pre_tokenizer.type "Whitespace"`},
		{"nested pre-tokenizer", edit(t, `"pre_tokenizer": {
    "type": "ByteLevel"`, `"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "Punctuation"}]}, "x": {
    "type": "ByteLevel"`), ErrUnsupported, `pre_tokenizer.pretokenizers[1].type "Punctuation"`},
		{"split behavior", edit(t, `"pre_tokenizer": {
    "type": "ByteLevel"`, `"pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"}, "x": {
    "type": "ByteLevel"`), ErrUnsupported, `pre_tokenizer.behavior "Sideways"`},
		{"merge not in vocab", edit(t, `"a t",`, `"a q",`), ErrBadTokenizer, `model.merges[0] "a" "q": "aq" not in vocab`},
		{"merge malformed", edit(t, `"a t",`, `"a",`), ErrBadTokenizer, "merges[0]"},
		{"merge malformed pair", edit(t, `"a t",`, `["a"],`), ErrBadTokenizer, "merges[0]"},
		{"negative id", edit(t, `"at": 256`, `"at": -1`), ErrBadTokenizer, "out of range"},
		{"huge id", edit(t, `"at": 256`, `"at": 99999999999`), ErrBadTokenizer, "out of range"},
		{"duplicate id", edit(t, `"at": 256`, `"at": 257`), ErrBadTokenizer, "id 257 used by"},
		{"outside alphabet", edit(t, `"at": 256`, `"a t": 256`), ErrBadTokenizer, "not in the byte-level alphabet"},
		{"added without id", edit(t, `"id": 266,`, ``), ErrBadTokenizer, "added_tokens[0]: no id"},
		{"unk missing", edit(t, `"unk_token": null`, `"unk_token": "<unk>"`), ErrBadTokenizer, "unk_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeBPE(tc.data)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %v containing %q", err, tc.sentinel, tc.want)
			}
		})
	}
}

// exactBytes reports whether tok must round-trip any byte string: a plain
// byte-level pipeline (no normalizer, no added tokens, a ByteLevel
// pre-tokenizer without add_prefix_space, the ByteLevel decoder) over a
// vocabulary with all 256 byte characters.
func exactBytes(tok *BPE) bool {
	bl, ok := tok.pre.(byteLevel)
	_, dec := tok.dec.(byteLevelDecoder)
	return tok.CoversBytes() && len(tok.added) == 0 && tok.norm == nil && ok && !bl.prefixSpace && dec
}

// FuzzTokenizerJSON feeds arbitrary bytes to DecodeBPE: it must not panic,
// and a tokenizer it accepts must encode to ids below VocabSize and, when it
// covers all bytes, round-trip text exactly.
func FuzzTokenizerJSON(f *testing.F) {
	seed, err := os.ReadFile("testdata/gpt2style/tokenizer.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, "the cat<|endoftext|> sat\n\n")
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},"pre_tokenizer":{"type":"ByteLevel"},"decoder":{"type":"ByteLevel"}}`), "abab ba")
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0},"merges":[["a","a"]]},"added_tokens":[{"id":1,"content":"x"}],"pre_tokenizer":{"type":"ByteLevel","use_regex":false},"decoder":{"type":"ByteLevel"}}`), "xax")
	f.Add(spStyleJSON(), "Hello wörld 😀\t<s>x")
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0,"▁":1,"▁a":2},"merges":["▁ a"],"byte_fallback":true,"unk_token":"a","fuse_unk":true},`+
		`"normalizer":{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Strip"},{"type":"Replace","pattern":{"Regex":"\\s+"},"content":" "}]},`+
		`"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"Split","pattern":{"Regex":"(?=[A-Z])"},"behavior":"MergedWithNext","invert":true},{"type":"Metaspace","prepend_scheme":"first"}]},`+
		`"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"a"}},{"Sequence":{"id":"A"}}],"special_tokens":{"a":{"ids":[0]}}},`+
		`"decoder":{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"Metaspace"},{"type":"Strip","content":"a","start":2,"stop":1}]}}`), "a  aA1b2")
	f.Add([]byte(`null`), "")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		tok, err := DecodeBPE(data)
		if err != nil {
			if !errors.Is(err, ErrBadTokenizer) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error of unknown kind: %v", err)
			}
			return
		}
		ids := tok.Encode(text)
		for _, id := range append(tok.EncodeSpecial(text), ids...) {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("id %d outside vocab of %d", id, tok.VocabSize())
			}
		}
		out := tok.Decode(ids)
		if exactBytes(tok) && out != text {
			t.Fatalf("round trip %q -> %q", text, out)
		}
		_ = utf8.ValidString(out)
	})
}
