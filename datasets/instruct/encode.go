package instruct

import "fmt"

// Encoder turns text into token ids without adding special tokens of its
// own; model/tokenizer's tokenizers are Encoders.
type Encoder interface {
	Encode(s string) []int
}

// Example is one rendered and tokenized record.
type Example struct {
	// ID is the record's ID.
	ID string
	// Tokens are the token ids of the rendering.
	Tokens []int
	// Mask[k] is 1 when Tokens[k] belongs to an assistant turn: a token the
	// model learns to produce.
	Mask []uint8
}

// Encode renders a record with r and tokenizes it with enc.
func Encode(rec Record, r Renderer, enc Encoder) (Example, error) {
	text, spans, err := r.Render(rec.Messages)
	if err != nil {
		return Example{}, fmt.Errorf("instruct: %s: %w", rec.ID, err)
	}
	ids := enc.Encode(text)
	mask := make([]uint8, len(ids))
	// tokensBefore is how many tokens of ids lie wholly before byte p.
	tokensBefore := func(p int) int {
		if p >= len(text) {
			return len(ids)
		}
		if p <= 0 {
			return 0
		}
		pre := enc.Encode(text[:p])
		n := 0
		for n < len(pre) && n < len(ids) && pre[n] == ids[n] {
			n++
		}
		return n
	}
	assistant := 0
	for _, s := range spans {
		a, b := tokensBefore(s.Start), tokensBefore(s.End)
		for k := a; k < b; k++ {
			mask[k] = 1
		}
		assistant += b - a
	}
	if assistant == 0 {
		return Example{}, fmt.Errorf("instruct: %s: no assistant tokens after tokenization", rec.ID)
	}
	return Example{ID: rec.ID, Tokens: ids, Mask: mask}, nil
}

// EncodeAll encodes every record, stopping at the first error.
func EncodeAll(recs []Record, r Renderer, enc Encoder) ([]Example, error) {
	out := make([]Example, 0, len(recs))
	for _, rec := range recs {
		ex, err := Encode(rec, r, enc)
		if err != nil {
			return nil, err
		}
		out = append(out, ex)
	}
	return out, nil
}
