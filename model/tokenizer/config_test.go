package tokenizer

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestOpenConfigs(t *testing.T) {
	data, err := os.ReadFile("testdata/gpt2style/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	write := func(dir, name, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, config, generation string
		bos                      int
		eos                      []int
		err                      string
	}{
		{"none", "", "", -1, nil, ""},
		{"strings", `{"bos_token": "at", "eos_token": "<|endoftext|>"}`, "", 256, []int{266}, ""},
		{"objects", `{"bos_token": {"content": "<|endoftext|>", "lstrip": false}, "eos_token": null}`, "", 266, nil, ""},
		{"generation wins", `{"bos_token": "at", "eos_token": "at"}`, `{"bos_token_id": 1, "eos_token_id": [266, 2]}`, 1, []int{266, 2}, ""},
		{"generation one eos", "", `{"eos_token_id": 266}`, -1, []int{266}, ""},
		{"unknown token", `{"bos_token": "nope"}`, "", 0, nil, `bos_token "nope" is not a token`},
		{"id out of range", "", `{"eos_token_id": 267}`, 0, nil, "outside the vocabulary"},
		{"bad json", `{`, "", 0, nil, "tokenizer_config.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(dir, FileName, string(data))
			if tc.config != "" {
				write(dir, ConfigFileName, tc.config)
			}
			if tc.generation != "" {
				write(dir, GenerationConfigFileName, tc.generation)
			}
			tok, err := Open(dir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			bos, ok := tok.BOS()
			if (tc.bos >= 0) != ok || (ok && bos != tc.bos) {
				t.Errorf("BOS = %d, %v, want %d", bos, ok, tc.bos)
			}
			if !reflect.DeepEqual(tok.EOS(), tc.eos) {
				t.Errorf("EOS = %v, want %v", tok.EOS(), tc.eos)
			}
			lt, err := LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := lt.(*BPE); !ok {
				t.Errorf("LoadDir gave %T", lt)
			}
		})
	}
	if tok, err := LoadDir(t.TempDir()); err != nil || tok.VocabSize() != 256 {
		t.Errorf("LoadDir of an empty folder = %v, %v; want the byte tokenizer", tok, err)
	}
	if got := EncodeSpecial(Byte{}, "hi"); !reflect.DeepEqual(got, []int{'h', 'i'}) {
		t.Errorf("EncodeSpecial(Byte) = %v", got)
	}
}

func TestValidUTF8(t *testing.T) {
	// Expected outputs as JavaScript's TextDecoder gives them (the WHATWG
	// decoder: one U+FFFD per maximal ill-formed subsequence).
	const r = "\uFFFD"
	for in, want := range map[string]string{
		"ok é":             "ok é",
		"\xff":             r,
		"a\xc3":            "a" + r,
		"\xc3\x28":         r + "(",
		"\xe2\x82":         r,
		"\xe2\x82\x28":     r + "(",
		"\xf0\x9f\x98":     r,
		"\xf0\x9f\x98\x80": "😀",
		"\xe0\x80\x80":     r + r + r,
		"\xed\xa0\x80":     r + r + r,
		"\xf4\x90\x80\x80": r + r + r + r,
		"\xc0\xaf":         r + r,
		"\x80\x80":         r + r,
	} {
		if got := ValidUTF8(in); got != want {
			t.Errorf("ValidUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}
