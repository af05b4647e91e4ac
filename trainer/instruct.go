package trainer

import (
	"fmt"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/eval"
	"github.com/fedtune/fedtune/model"
)

// InstructPad is the token id that pads packed instruction windows. Padding
// is a document of its own with no loss, so its id changes nothing.
const InstructPad = 0

// InstructWindows is eval.InstructExamples (the records rendered with
// modelDir's chat template and tokenized) packed into windows of seqLen+1
// tokens (instruct.Pack, padded with InstructPad). A window with no
// trained target (its documents cut off before their answers) is left out:
// a batch of such windows has nothing to learn.
func InstructWindows(d *datasets.Dataset, modelDir string, tok instruct.Encoder, seqLen int) ([]instruct.Window, instruct.PackStats, error) {
	exs, err := eval.InstructExamples(d, modelDir, tok)
	if err != nil {
		return nil, instruct.PackStats{}, err
	}
	ws, st, err := instruct.Pack(exs, seqLen, InstructPad)
	if err != nil {
		return nil, st, err
	}
	kept := ws[:0]
	for _, w := range ws {
		for _, v := range w.LossMask() {
			if v != 0 {
				kept = append(kept, w)
				break
			}
		}
	}
	st.Windows = len(kept)
	return kept, st, nil
}

// InstructBatches deals packed windows as model.Batches, in
// instruct.Batcher's seeded order.
type InstructBatches struct{ b *instruct.Batcher }

var _ model.BatchesSource = (*InstructBatches)(nil)

// NewInstructBatches returns a source of batches of batch windows.
func NewInstructBatches(ws []instruct.Window, batch int, seed uint64) *InstructBatches {
	return &InstructBatches{b: instruct.NewBatcher(ws, batch, seed)}
}

// NextBatch implements model.BatchesSource.
func (s *InstructBatches) NextBatch() model.Batch { return model.Batch(s.b.NextBatch()) }

// ReadInstruct reads path as instruction data when instruct.ReadDataset
// accepts it; ok is false for any other file or folder, which is plain
// training data.
func ReadInstruct(path string) (d *datasets.Dataset, ok bool) {
	d, _, err := instruct.ReadDataset(path)
	if err != nil {
		return nil, false
	}
	return d, true
}

// feed is the local data of a task cut for training: plain windows, or
// packed instruction windows.
type feed struct {
	windows [][]int
	packed  []instruct.Window
	// samples[k] are the sample IDs (datasets.SampleIDs) window k draws
	// from, in stream order.
	samples [][]string
	// log collects, for each batch dealt, its windows' sample IDs.
	log *[][]string
}

// source returns the feed's batches under tc; the feed's log then records
// the sample IDs of every batch they deal.
func (f *feed) source(tc model.TrainConfig) (model.BatchSource, model.BatchesSource) {
	f.log = new([][]string)
	if f.packed != nil {
		return nil, &loggedPacked{b: instruct.NewBatcher(f.packed, tc.Batch, tc.Seed), f: f}
	}
	return &loggedPlain{b: datasets.NewBatcher(f.windows, tc.Batch, tc.Seed), f: f}, nil
}

// steps returns the sample IDs of each batch dealt so far.
func (f *feed) steps() [][]string {
	if f.log == nil {
		return nil
	}
	return *f.log
}

// note logs the sample IDs of the windows of one batch.
func (f *feed) note(idx []int) {
	var ids []string
	for _, k := range idx {
		ids = append(ids, f.samples[k]...)
	}
	*f.log = append(*f.log, ids)
}

// loggedPlain is a datasets.Batcher whose batches a feed logs.
type loggedPlain struct {
	b *datasets.Batcher
	f *feed
}

func (l *loggedPlain) Next() [][]int {
	out := l.b.Next()
	if out != nil {
		l.f.note(l.b.Last())
	}
	return out
}

// loggedPacked is an instruct.Batcher whose batches a feed logs.
type loggedPacked struct {
	b *instruct.Batcher
	f *feed
}

func (l *loggedPacked) NextBatch() model.Batch {
	out := model.Batch(l.b.NextBatch())
	if out.Tokens != nil {
		l.f.note(l.b.Last())
	}
	return out
}

// errNoMasks says that a session cannot train instruction batches.
func errNoMasks(device string) error {
	return fmt.Errorf("%w: device %s cannot train instruction data (masked loss, packed documents); use %s", ErrTask, device, DeviceCPU)
}
