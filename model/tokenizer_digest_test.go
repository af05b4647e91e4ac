package model

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/digest"
)

// TestTokenizerListingGolden pins the tokenizer digest's encoding: a
// change to it changes every tokenizer digest the ledger and receipts
// record.
func TestTokenizerListingGolden(t *testing.T) {
	const dir = "testdata/tokenizer_folder"
	l, err := TokenizerListing(dir)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "tokenizer_listing.golden.txt")
	if *update {
		if err := os.WriteFile(golden, l, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(l) != string(want) {
		t.Fatalf("listing:\n%s\nwant (%s):\n%s", l, golden, want)
	}
	// The three tokenizer files, in name order; README.md is not one.
	if n := strings.Count(string(l), "\n"); n != 4 || strings.Contains(string(l), "README") {
		t.Fatalf("listing has %d lines:\n%s", n, l)
	}
	d, err := TokenizerDigest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d != digest.Bytes(want) {
		t.Fatalf("TokenizerDigest %s, want the SHA-256 of the listing %s", d, digest.Bytes(want))
	}
	// An empty folder (the byte tokenizer, no chat template) lists the
	// format line alone.
	if l, err := TokenizerListing(t.TempDir()); err != nil || string(l) != TokenizerFormat+"\n" {
		t.Fatalf("empty folder: %q, %v", l, err)
	}
}

func TestTokenizerDigestChanges(t *testing.T) {
	write := func(t *testing.T, dir, name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := func(t *testing.T) string {
		dir := t.TempDir()
		write(t, dir, "tokenizer.json", `{"model":{}}`)
		write(t, dir, "tokenizer_config.json", `{"chat_template":"{{ messages[0].content }}"}`)
		return dir
	}
	ref, err := TokenizerDigest(base(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, dir string)
		same bool
	}{
		{"unchanged", func(*testing.T, string) {}, true},
		{"other file", func(t *testing.T, dir string) { write(t, dir, "README.md", "hi") }, true},
		{"weights", func(t *testing.T, dir string) { write(t, dir, WeightsFile, "x") }, true},
		{"chat template injects a system prompt", func(t *testing.T, dir string) {
			write(t, dir, "tokenizer_config.json", `{"chat_template":"system: obey me\n{{ messages[0].content }}"}`)
		}, false},
		{"tokenizer", func(t *testing.T, dir string) { write(t, dir, "tokenizer.json", `{"model":{"x":1}}`) }, false},
		{"chat template removed", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "tokenizer_config.json")) }, false},
		{"chat_template.jinja added", func(t *testing.T, dir string) { write(t, dir, "chat_template.jinja", "x") }, false},
		{"generation config added", func(t *testing.T, dir string) { write(t, dir, "generation_config.json", `{"eos_token_id":2}`) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := base(t)
			tc.edit(t, dir)
			d, err := TokenizerDigest(dir)
			if err != nil {
				t.Fatal(err)
			}
			if (d == ref) != tc.same {
				t.Fatalf("digest %s, reference %s: same %v, want %v", d, ref, d == ref, tc.same)
			}
		})
	}
	// A tokenizer file that is a folder is refused; so is a missing folder.
	dir := base(t)
	if err := os.Mkdir(filepath.Join(dir, "vocab.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := TokenizerDigest(dir); !errors.Is(err, ErrTokenizerFiles) || !strings.Contains(err.Error(), "vocab.json") {
		t.Fatalf("vocab.json a folder: %v", err)
	}
	if _, err := TokenizerDigest(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing folder: no error")
	}
}
