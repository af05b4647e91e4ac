package instruct

import "fmt"

// Window is one packed training window of seqLen+1 tokens: inputs are
// Tokens[:seqLen], targets Tokens[1:].
type Window struct {
	Tokens []int
	// Mask[k] is 1 when Tokens[k] is an assistant token.
	Mask []uint8
	// Segments[k] is the 1-based number, within the window, of the
	// document Tokens[k] comes from; 0 marks padding.
	Segments []int32
	// IDs are the record IDs of the window's documents, in order:
	// IDs[s-1] is document s.
	IDs []string
}

// SeqLen is the number of input positions of w.
func (w Window) SeqLen() int { return len(w.Tokens) - 1 }

// Inputs returns the input token ids, Tokens[:SeqLen].
func (w Window) Inputs() []int { return w.Tokens[:len(w.Tokens)-1] }

// Targets returns the target token ids, Tokens[1:].
func (w Window) Targets() []int { return w.Tokens[1:] }

// InputSegments returns the document numbers of the inputs.
func (w Window) InputSegments() []int32 { return w.Segments[:len(w.Segments)-1] }

// LossMask returns, per input position t, 1 when target t is trained: an
// assistant token of the same (non-padding) document as input t.
func (w Window) LossMask() []float32 {
	n := w.SeqLen()
	m := make([]float32, n)
	for t := range n {
		if w.Mask[t+1] == 1 && w.Segments[t] != 0 && w.Segments[t+1] == w.Segments[t] {
			m[t] = 1
		}
	}
	return m
}

// Positions returns, per input position, its position within its document
// (rotary positions restart at every document; padding counts on from its
// start).
func (w Window) Positions() []int {
	n := w.SeqLen()
	p := make([]int, n)
	for t := 1; t < n; t++ {
		if w.Segments[t] == w.Segments[t-1] {
			p[t] = p[t-1] + 1
		}
	}
	return p
}

// Attends reports whether input q may attend to input k: causal and within
// one document. Padding attends only to padding.
func (w Window) Attends(q, k int) bool {
	return k <= q && w.Segments[q] == w.Segments[k]
}

// PackStats describes a packing.
type PackStats struct {
	Documents int
	Windows   int
	// Truncated counts documents longer than a window, cut to its length.
	Truncated int
	// Padding counts padding tokens.
	Padding int
}

// Pack lays examples, in order, into windows of seqLen+1 tokens. A
// document that does not fit the room left in a window starts the next
// one; the room left is padded with pad. A document longer than a window
// is cut to seqLen+1 tokens.
func Pack(examples []Example, seqLen, pad int) ([]Window, PackStats, error) {
	if seqLen < 1 {
		return nil, PackStats{}, fmt.Errorf("instruct: pack: seqLen %d < 1", seqLen)
	}
	size := seqLen + 1
	var (
		out []Window
		cur Window
		st  PackStats
	)
	flush := func() {
		if len(cur.Tokens) == 0 {
			return
		}
		for len(cur.Tokens) < size {
			cur.Tokens = append(cur.Tokens, pad)
			cur.Mask = append(cur.Mask, 0)
			cur.Segments = append(cur.Segments, 0)
			st.Padding++
		}
		out = append(out, cur)
		cur = Window{}
	}
	for _, ex := range examples {
		if len(ex.Tokens) != len(ex.Mask) {
			return nil, PackStats{}, fmt.Errorf("instruct: pack: %s: %d tokens, %d mask entries", ex.ID, len(ex.Tokens), len(ex.Mask))
		}
		toks, mask := ex.Tokens, ex.Mask
		if len(toks) == 0 {
			continue
		}
		if len(toks) > size {
			toks, mask = toks[:size], mask[:size]
			st.Truncated++
		}
		if len(cur.Tokens)+len(toks) > size {
			flush()
		}
		cur.IDs = append(cur.IDs, ex.ID)
		seg := int32(len(cur.IDs))
		cur.Tokens = append(cur.Tokens, toks...)
		cur.Mask = append(cur.Mask, mask...)
		for range toks {
			cur.Segments = append(cur.Segments, seg)
		}
		st.Documents++
	}
	flush()
	st.Windows = len(out)
	return out, st, nil
}
