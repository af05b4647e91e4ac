package instruct

import "github.com/fedtune/fedtune/datasets"

// Batch is a batch of packed windows laid out as a trainer consumes them:
// row b is window b.
type Batch struct {
	// Tokens are the windows' seqLen+1 tokens (inputs, then shifted
	// targets), as model.Stepper.Step takes them.
	Tokens [][]int
	// Loss are the windows' LossMask: 1 where a target is trained.
	Loss [][]float32
	// Segments are the windows' InputSegments: attention stays within a
	// segment.
	Segments [][]int32
	// Positions are the windows' Positions: rotary positions restarting at
	// each document.
	Positions [][]int
}

// NewBatch lays out ws.
func NewBatch(ws []Window) Batch {
	b := Batch{
		Tokens:    make([][]int, len(ws)),
		Loss:      make([][]float32, len(ws)),
		Segments:  make([][]int32, len(ws)),
		Positions: make([][]int, len(ws)),
	}
	for i, w := range ws {
		b.Tokens[i] = w.Tokens
		b.Loss[i] = w.LossMask()
		b.Segments[i] = w.InputSegments()
		b.Positions[i] = w.Positions()
	}
	return b
}

// Batcher deals packed windows out in batches, forever, in the order
// datasets.Batcher would deal them (a seeded shuffle every epoch). It is not
// safe for concurrent use.
type Batcher struct {
	windows []Window
	b       *datasets.Batcher
}

// NewBatcher returns a Batcher over windows with batch windows per batch
// (at least 1).
func NewBatcher(windows []Window, batch int, seed uint64) *Batcher {
	idx := make([][]int, len(windows))
	for i := range idx {
		idx[i] = []int{i}
	}
	return &Batcher{windows: windows, b: datasets.NewBatcher(idx, batch, seed)}
}

// Next returns the next batch; its windows are shared with the caller's.
// It returns nil when there are no windows.
func (b *Batcher) Next() []Window {
	idx := b.b.Next()
	if idx == nil {
		return nil
	}
	out := make([]Window, len(idx))
	for i, w := range idx {
		out[i] = b.windows[w[0]]
	}
	return out
}

// Last returns the indices, into the windows, of the batch Next returned
// last, in batch order.
func (b *Batcher) Last() []int { return b.b.Last() }

// NextBatch returns NewBatch(b.Next()), or a zero Batch when there are no
// windows.
func (b *Batcher) NextBatch() Batch {
	ws := b.Next()
	if ws == nil {
		return Batch{}
	}
	return NewBatch(ws)
}
