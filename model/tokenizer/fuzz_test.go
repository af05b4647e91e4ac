package tokenizer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// spStyleJSON returns a small SentencePiece-style tokenizer.json in the
// shape of Llama 2's: Prepend/Replace normalizer, BPE with byte_fallback
// over all 256 <0xXX> tokens, the Replace/ByteFallback/Fuse/Strip decoder
// and a BOS template. Its round trip is exact on valid UTF-8 without "▁"
// and without "<s>".
func spStyleJSON() []byte {
	vocab := map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2}
	for b := 0; b < 256; b++ {
		vocab[fmt.Sprintf("<0x%02X>", b)] = len(vocab)
	}
	merges := [][2]string{{"▁", "t"}, {"h", "e"}, {"▁t", "he"}, {"e", "l"}, {"el", "l"}, {"ell", "o"}, {"▁", "▁"}}
	for _, t := range []string{"▁", "t", "h", "e", "l", "o", "a", "ö"} {
		vocab[t] = len(vocab)
	}
	var ms []string
	for _, m := range merges {
		if _, ok := vocab[m[0]+m[1]]; !ok {
			vocab[m[0]+m[1]] = len(vocab)
		}
		ms = append(ms, m[0]+" "+m[1])
	}
	f := map[string]any{
		"added_tokens": []any{
			map[string]any{"id": 0, "content": "<unk>", "special": true},
			map[string]any{"id": 1, "content": "<s>", "special": true},
			map[string]any{"id": 2, "content": "</s>", "special": true},
		},
		"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": "▁"},
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"},
		}},
		"pre_tokenizer": nil,
		"post_processor": map[string]any{"type": "TemplateProcessing",
			"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": "<s>"}}, map[string]any{"Sequence": map[string]any{"id": "A"}}},
			"special_tokens": map[string]any{"<s>": map[string]any{"id": "<s>", "ids": []int{1}, "tokens": []string{"<s>"}}}},
		"decoder": map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
			map[string]any{"type": "ByteFallback"},
			map[string]any{"type": "Fuse"},
			map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0},
		}},
		"model": map[string]any{"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
			"vocab": vocab, "merges": ms},
	}
	data, err := json.Marshal(f)
	if err != nil {
		panic(err)
	}
	return data
}

func TestSPStyle(t *testing.T) {
	tok, err := DecodeBPE(spStyleJSON())
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.EncodeSpecial("the hello")
	if ids[0] != 1 {
		t.Errorf("EncodeSpecial = %v: no BOS", ids)
	}
	if got := tok.Decode(ids); got != "<s> the hello" {
		t.Errorf("Decode = %q", got)
	}
	// "▁the" and "▁" by the merges, "he" before "el" can apply, "x" by byte
	// fallback.
	want := []string{"▁the", "▁", "he", "l", "l", "o", "<0x78>"}
	var toks []string
	for _, id := range tok.Encode("the hellox") {
		toks = append(toks, tok.tokens[id])
	}
	if !reflect.DeepEqual(toks, want) {
		t.Errorf("tokens = %q, want %q", toks, want)
	}
	for _, s := range []string{"", " ", "  x", "héllo wörld", "日本 😀\n\t", "\uFFFD"} {
		if got := tok.Decode(tok.Encode(s)); got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
	// A run of byte tokens that is not UTF-8 decodes to one U+FFFD a byte,
	// as in Hugging Face's tokenizers.
	if got := tok.Decode([]int{tok.vocab["<0xC3>"], tok.vocab["<0x28>"], tok.vocab["<0xE2>"], tok.vocab["<0x82>"]}); got != "\uFFFD\uFFFD\uFFFD\uFFFD" {
		t.Errorf("Decode of bad bytes = %q", got)
	}
}

// FuzzRoundTrip encodes and decodes arbitrary text with the byte-level
// test tokenizer (exact for any bytes) and the SentencePiece-style one
// (exact for valid UTF-8 without "▁" and "<s>").
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"the cat sat", "  two  spaces ", "日本語 😀 👨‍👩‍👧", "\xff\xfe bad", "<s>x</s>", "1234567 3.14", "\t\n\r\n"} {
		f.Add(s)
	}
	bl := loadGPT2Style(f)
	sp, err := DecodeBPE(spStyleJSON())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range []*BPE{bl, sp} {
			ids := tok.EncodeSpecial(s)
			for _, id := range ids {
				if id < 0 || id >= tok.VocabSize() {
					t.Fatalf("id %d outside vocab of %d", id, tok.VocabSize())
				}
			}
			if !reflect.DeepEqual(tok.Encode(s), tok.Encode(s)) {
				t.Fatal("Encode is not deterministic")
			}
		}
		if got := bl.Decode(bl.Encode(s)); got != s {
			t.Fatalf("byte-level round trip %q -> %q", s, got)
		}
		if utf8.ValidString(s) && !strings.Contains(s, "▁") && !strings.Contains(s, "<s>") && !strings.Contains(s, "</s>") && !strings.Contains(s, "<unk>") {
			if got := sp.Decode(sp.Encode(s)); got != s {
				t.Fatalf("SentencePiece-style round trip %q -> %q", s, got)
			}
		}
		if v := ValidUTF8(s); !utf8.ValidString(v) || (utf8.ValidString(s) && v != s) {
			t.Fatalf("ValidUTF8(%q) = %q", s, v)
		}
	})
}

// FuzzSplitRegexp2 checks the hand-written GPT-2 and LLaMA 3 splits against
// their patterns run by regexp2.
func FuzzSplitRegexp2(f *testing.F) {
	for _, s := range []string{"Hello world's 12345 !!\n\n  x", "I'M (here)\n  \n z", "ünïcode 3.14\u00a0\u2028x", "a\tb  \r\n"} {
		f.Add(s)
	}
	g, err := compileRegex(gpt2Pattern)
	if err != nil {
		f.Fatal(err)
	}
	l, err := compileRegex(llama3Pattern)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		for _, c := range []struct {
			hand pieceFunc
			re   *regex
		}{{splitGPT2, g}, {splitLlama3, l}} {
			if a, b := c.hand.matches(s), c.re.matches(s); !reflect.DeepEqual(a, b) {
				t.Fatalf("%q: hand-written %v, regexp2 %v", s, a, b)
			}
		}
	})
}

func TestSplitMatchesRegexp2(t *testing.T) {
	g, _ := compileRegex(gpt2Pattern)
	l, _ := compileRegex(llama3Pattern)
	alphabet := []rune("aZé日 \t\n\r'sSmLld1٣½.,!(\u00a0\u2028\u3000😀\u0301_-")
	r := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		rs := make([]rune, r.IntN(16))
		for i := range rs {
			rs[i] = alphabet[r.IntN(len(alphabet))]
		}
		s := string(rs)
		if a, b := pieceFunc(splitGPT2).matches(s), g.matches(s); !reflect.DeepEqual(a, b) {
			t.Fatalf("GPT-2 %q: hand-written %v, regexp2 %v", s, a, b)
		}
		if a, b := pieceFunc(splitLlama3).matches(s), l.matches(s); !reflect.DeepEqual(a, b) {
			t.Fatalf("LLaMA 3 %q: hand-written %v, regexp2 %v", s, a, b)
		}
	}
}

// TestEncodeConcurrent encodes from several goroutines at once (the word
// cache is shared); run it with -race.
func TestEncodeConcurrent(t *testing.T) {
	tok, err := DecodeBPE(spStyleJSON())
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"the hello", "hello the", "ö a tl", "日本"}
	want := make([][]int, len(texts))
	for i, s := range texts {
		want[i] = tok.Encode(s)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := (g + i) % len(texts)
				if got := tok.Encode(texts[k]); !reflect.DeepEqual(got, want[k]) {
					t.Errorf("Encode(%q) = %v, want %v", texts[k], got, want[k])
					return
				}
			}
		}()
	}
	wg.Wait()
}
