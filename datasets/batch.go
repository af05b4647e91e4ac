package datasets

import (
	"encoding/hex"
	"math/rand/v2"
	"slices"
)

// Encoder turns text into token ids; tokenizer.Tokenizer satisfies it.
type Encoder interface {
	Encode(string) []int
}

// Separator is the text Tokenize puts after every sample.
const Separator = "\n"

// Tokenize returns the concatenation, in sample order, of each sample's
// encoding followed by the encoding of Separator ("\n"), so the stream reads
// like a text file with one sample per line (or paragraph).
func Tokenize(d *Dataset, enc Encoder) []int {
	out, _ := TokenizeSpans(d, enc)
	return out
}

// TokenizeSpans is Tokenize that also returns, for each sample, the end
// offset (exclusive) in the stream of its tokens and separator: sample i
// spans tokens [ends[i-1], ends[i]) (ends[-1] = 0).
func TokenizeSpans(d *Dataset, enc Encoder) (tokens, ends []int) {
	sep := enc.Encode(Separator)
	ends = make([]int, len(d.Samples))
	for i, s := range d.Samples {
		tokens = append(tokens, enc.Encode(s.Text)...)
		tokens = append(tokens, sep...)
		ends[i] = len(tokens)
	}
	return tokens, ends
}

// WindowSamples returns, for each window Windows(tokens, seqLen) cuts from a
// stream of n tokens whose samples end at ends (TokenizeSpans), the indices
// of the samples it draws tokens from, in stream order. A sample whose
// span is empty draws nothing and is in no window.
func WindowSamples(ends []int, n, seqLen int) [][]int {
	if seqLen < 1 {
		return nil
	}
	var out [][]int
	first := 0 // first sample that may end after the window's start
	for start := 0; start+seqLen+1 <= n; start += seqLen {
		end := start + seqLen + 1
		for first < len(ends) && ends[first] <= start {
			first++
		}
		var idx []int
		for i := first; i < len(ends); i++ {
			lo := 0
			if i > 0 {
				lo = ends[i-1]
			}
			if lo >= end {
				break
			}
			if ends[i] > lo && ends[i] > start {
				idx = append(idx, i)
			}
		}
		out = append(out, idx)
	}
	return out
}

// SampleIDs returns the audit ID of each of d's samples: the hex of its
// manifest leaf (SampleDigest of its text), the value whose inclusion in a
// registered manifest's root a LeafProof shows.
func SampleIDs(d *Dataset) []string {
	ids := make([]string, len(d.Samples))
	for i, s := range d.Samples {
		h := SampleDigest(s.Text)
		ids[i] = hex.EncodeToString(h[:])
	}
	return ids
}

// Windows cuts tokens into non-overlapping training windows of seqLen+1
// tokens: window k is tokens[k*seqLen : k*seqLen+seqLen+1], whose first
// seqLen tokens are the inputs and last seqLen the targets, so consecutive
// windows share one boundary token. A final window shorter than seqLen+1 is
// dropped; seqLen < 1 gives none. The windows alias tokens (capacity capped,
// so appending to one does not overwrite the next).
func Windows(tokens []int, seqLen int) [][]int {
	if seqLen < 1 {
		return nil
	}
	var out [][]int
	for start := 0; start+seqLen+1 <= len(tokens); start += seqLen {
		out = append(out, tokens[start:start+seqLen+1:start+seqLen+1])
	}
	return out
}

// Batcher deals windows out in batches, forever. Each epoch visits every
// window once in an order drawn from a PCG generator seeded with (seed,
// epoch), so the sequence of batches depends only on the windows, the batch
// size and the seed. A batch that runs past the end of an epoch continues
// with the next epoch's order (so a batch larger than the number of windows
// wraps). A Batcher is not safe for concurrent use.
type Batcher struct {
	windows [][]int
	batch   int
	seed    uint64
	epoch   uint64
	order   []int
	pos     int
	last    []int
}

// NewBatcher returns a Batcher over windows with batch windows per batch
// (at least 1).
func NewBatcher(windows [][]int, batch int, seed uint64) *Batcher {
	b := &Batcher{windows: windows, batch: max(batch, 1), seed: seed}
	b.shuffle()
	return b
}

func (b *Batcher) shuffle() {
	r := rand.New(rand.NewPCG(b.seed, b.epoch))
	b.order = r.Perm(len(b.windows))
	b.pos = 0
}

// Next returns the next batch of windows (the slices are shared with the
// caller's windows; do not modify them). It returns nil when there are no
// windows.
func (b *Batcher) Next() [][]int {
	if len(b.windows) == 0 {
		return nil
	}
	out := make([][]int, 0, b.batch)
	b.last = make([]int, 0, b.batch)
	for len(out) < b.batch {
		if b.pos == len(b.order) {
			b.epoch++
			b.shuffle()
		}
		out = append(out, b.windows[b.order[b.pos]])
		b.last = append(b.last, b.order[b.pos])
		b.pos++
	}
	return out
}

// Last returns the indices, into the windows, of the batch Next returned
// last, in batch order (nil before the first batch).
func (b *Batcher) Last() []int { return slices.Clone(b.last) }

// Epoch returns the number of completed passes over the windows.
func (b *Batcher) Epoch() uint64 {
	if len(b.order) > 0 && b.pos == len(b.order) {
		return b.epoch + 1
	}
	return b.epoch
}

// Len returns the number of windows.
func (b *Batcher) Len() int { return len(b.windows) }
