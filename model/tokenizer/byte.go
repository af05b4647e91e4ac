package tokenizer

import "fmt"

// Byte is the byte tokenizer: token id = byte value, no BOS or EOS. The zero
// value has a vocabulary of 256; NewByte makes one for a larger model
// vocabulary (ids 256 and up are never produced, and Decode skips them).
type Byte struct {
	size int
}

var _ Tokenizer = Byte{}

// NewByte returns a byte tokenizer for a model with vocabSize embedding rows.
// vocabSize must be at least 256.
func NewByte(vocabSize int) (Byte, error) {
	if vocabSize < 256 {
		return Byte{}, fmt.Errorf("tokenizer: byte tokenizer needs vocab_size >= 256, model has %d: %w", vocabSize, ErrVocabSize)
	}
	return Byte{size: vocabSize}, nil
}

// Encode returns one id per byte of s.
func (Byte) Encode(s string) []int {
	ids := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int(s[i])
	}
	return ids
}

// Decode returns the bytes of ids as a string, skipping ids outside 0–255.
// The result is the exact byte string that was encoded, even if it is not
// valid UTF-8.
func (Byte) Decode(ids []int) string {
	b := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < 256 {
			b = append(b, byte(id))
		}
	}
	return string(b)
}

// VocabSize returns the model vocabulary the tokenizer was made for (256 for
// the zero value).
func (b Byte) VocabSize() int {
	if b.size == 0 {
		return 256
	}
	return b.size
}
