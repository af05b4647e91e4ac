package model

import (
	"context"
	"fmt"
)

// Batch is one training batch with optional per-token weights, document
// segments and rotary positions, as instruction tuning packs it
// (datasets/instruct's Batch has the same layout and converts to it). Row b
// is window b. A nil field keeps the plain step's behaviour for it.
type Batch struct {
	// Tokens are the windows' SeqLen+1 tokens: inputs, then the shifted
	// targets (what Stepper.Step takes).
	Tokens [][]int
	// Loss weighs target t of row b (B×SeqLen, each ≥ 0): the step's loss
	// is Σ w·ℓ / Σ w. Nil weighs every target 1.
	Loss [][]float32
	// Segments number the documents of a row (B×SeqLen): input q attends
	// to input k only when k ≤ q and Segments[b][k] == Segments[b][q].
	// Nil puts a whole row in one document.
	Segments [][]int32
	// Positions are the rotary positions of the inputs (B×SeqLen, each in
	// [0, SeqLen)); nil is the position in the row.
	Positions [][]int
}

// BatchStepper takes optimisation steps on Batches (model/engine's Trainer).
type BatchStepper interface {
	Stepper
	StepBatch(b Batch) (float64, error)
}

// BatchesSource deals Batches (datasets/instruct's Batcher, adapted).
type BatchesSource interface {
	NextBatch() Batch
}

// RunBatchSteps is RunSteps on Batches: s takes steps on batches from src
// until it has taken steps in all or ctx is done, and it returns the loss
// of the last step. A batch with no tokens means src ran dry.
func RunBatchSteps(ctx context.Context, s BatchStepper, steps int, src BatchesSource) (float64, error) {
	var loss float64
	for s.StepCount() < steps {
		if err := ctx.Err(); err != nil {
			return loss, err
		}
		b := src.NextBatch()
		if b.Tokens == nil {
			return loss, fmt.Errorf("model: batch source ran dry after %d steps", s.StepCount())
		}
		l, err := s.StepBatch(b)
		if err != nil {
			return loss, err
		}
		loss = l
	}
	return loss, nil
}
