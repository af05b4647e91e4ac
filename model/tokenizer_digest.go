package model

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/fedtune/fedtune/internal/digest"
)

// TokenizerFormat is the first line of the listing TokenizerDigest hashes.
const TokenizerFormat = "fedtune-tokenizer/1"

// TokenizerFiles are the files of a model folder that turn text and chat
// messages into token ids, or name the tokens that begin and end them:
// the tokenizer, its vocabulary and merges, its special tokens, the chat
// template (in tokenizer_config.json, or chat_template.jinja/.json as
// newer Hugging Face folders keep it) and generation_config.json (whose
// bos_token_id and eos_token_id the tokenizer takes). Sorted. The weight
// digest covers none of them, and config.json has a digest of its own.
var TokenizerFiles = func() []string {
	s := append(slices.Clone(ImportCopied), "chat_template.jinja", "chat_template.json")
	slices.Sort(s)
	return slices.Compact(s)
}()

// ErrTokenizerFiles is wrapped by TokenizerListing's errors about a
// tokenizer file that is not a regular file.
var ErrTokenizerFiles = errors.New("model: bad tokenizer file")

// TokenizerListing returns the canonical listing of the TokenizerFiles
// present in the model folder dir: the line TokenizerFormat, then for each
// file present, in TokenizerFiles order, one line "NAME SIZE SHA256" (size
// in decimal bytes, SHA-256 as 64 lowercase hex), each line ended by "\n".
// A folder with none of them (the byte tokenizer, no chat template) lists
// the first line alone. A name present but not a regular file (after
// symbolic links) is an error.
func TokenizerListing(dir string) ([]byte, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("tokenizer digest: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("tokenizer digest: %s is not a folder", dir)
	}
	var b bytes.Buffer
	b.WriteString(TokenizerFormat + "\n")
	for _, name := range TokenizerFiles {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tokenizer digest: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("tokenizer digest: %s: not a regular file: %w", p, ErrTokenizerFiles)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("tokenizer digest: %w", err)
		}
		fmt.Fprintf(&b, "%s %d %s\n", name, len(data), digest.Bytes(data))
	}
	return b.Bytes(), nil
}

// TokenizerDigest returns the tokenizer digest of the model folder dir:
// the SHA-256 (64 lowercase hex) of its TokenizerListing. It pins how the
// folder turns a request into prompt token ids, the chat template
// included, as the weight digest pins the weights.
func TokenizerDigest(dir string) (string, error) {
	l, err := TokenizerListing(dir)
	if err != nil {
		return "", err
	}
	return digest.Bytes(l), nil
}
