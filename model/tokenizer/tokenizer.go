package tokenizer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Tokenizer encodes text to token ids and decodes ids back to text.
// Implementations are safe for concurrent use.
type Tokenizer interface {
	// Encode returns the token ids of s.
	Encode(s string) []int
	// Decode returns the text of ids. Ids outside the vocabulary are skipped.
	Decode(ids []int) string
	// VocabSize is the number of token ids the model must be able to embed:
	// every id Encode returns is below it.
	VocabSize() int
}

// SpecialEncoder is implemented by tokenizers whose tokenizer.json has a
// post-processor: EncodeSpecial returns the ids of s with the special tokens
// it adds (BOS and the like), where Encode leaves them out.
type SpecialEncoder interface {
	EncodeSpecial(s string) []int
}

// EncodeSpecial returns t.EncodeSpecial(s) when t is a SpecialEncoder, else
// t.Encode(s).
func EncodeSpecial(t Tokenizer, s string) []int {
	if se, ok := t.(SpecialEncoder); ok {
		return se.EncodeSpecial(s)
	}
	return t.Encode(s)
}

// LoadDir returns the tokenizer of the model folder dir without a model's
// vocabulary size to check against: Open's when dir holds tokenizer.json,
// else the byte tokenizer.
func LoadDir(dir string) (Tokenizer, error) {
	if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
		return Open(dir)
	}
	return Load(dir, 256)
}

// FileName is the name of the Hugging Face tokenizer file Load looks for.
const FileName = "tokenizer.json"

// ErrVocabSize is returned when a tokenizer does not fit the model's
// vocabulary size.
var ErrVocabSize = errors.New("tokenizer: vocabulary size mismatch")

// Load returns the tokenizer of the model folder dir for a model whose
// embedding has vocabSize rows.
//
// If dir holds no tokenizer.json (or dir is ""), Load returns the byte
// tokenizer; vocabSize must then be at least 256. If dir holds
// tokenizer.json, it is read with Open and every id it can produce must be
// below vocabSize.
func Load(dir string, vocabSize int) (Tokenizer, error) {
	if dir != "" {
		st, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: load %s: %w", dir, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("tokenizer: load %s: not a folder", dir)
		}
		p := filepath.Join(dir, FileName)
		_, err = os.Stat(p)
		switch {
		case err == nil:
			t, err := Open(dir)
			if err != nil {
				return nil, err
			}
			if t.VocabSize() > vocabSize {
				return nil, fmt.Errorf("tokenizer: %s: ids up to %d do not fit the model's vocab_size %d: %w",
					p, t.VocabSize()-1, vocabSize, ErrVocabSize)
			}
			return t, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
	}
	b, err := NewByte(vocabSize)
	if err != nil {
		return nil, err
	}
	return b, nil
}
