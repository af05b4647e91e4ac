package model

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
