package engine

import (
	"runtime/debug"
	"testing"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
)

// TestStepAllocatesNothing: after warm-up a training step on Host
// allocates nothing (LoRA with dropout, and full fine-tuning), at sizes at
// which the Host spreads work over its pool.
func TestStepAllocatesNothing(t *testing.T) {
	if fedtest.RaceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	if _, serial := (&host{}).gemm(); !serial {
		t.Skip("gonum's pure-Go sgemm (no AVX2) allocates")
	}
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 256, 64, 172, 2
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 4, 2, 128
	m, err := model.New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, lora := range []*model.LoRAConfig{nil, {Rank: 8, Alpha: 16, Dropout: 0.05, Targets: []string{"q_proj", "v_proj"}}} {
		cfg := model.TrainConfig{LoRA: lora, Steps: 100, Batch: 4, SeqLen: 64, LR: 1e-3, ClipNorm: 1, Seed: 1}
		tr, err := NewTrainer(NewHost(), m, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		batch := make([][]int, cfg.Batch)
		for b := range batch {
			for p := 0; p <= cfg.SeqLen; p++ {
				batch[b] = append(batch[b], (b*31+p*7)%c.VocabSize)
			}
		}
		step := func() {
			if _, err := tr.Step(batch); err != nil {
				t.Fatal(err)
			}
		}
		step()
		// A collection empties gemmPool (a sync.Pool), and its refill is an
		// allocation the step itself does not make: measure with the
		// collector off so a loaded machine's GC timing cannot fail this.
		old := debug.SetGCPercent(-1)
		n := testing.AllocsPerRun(5, step)
		debug.SetGCPercent(old)
		if n != 0 {
			t.Errorf("lora=%v: a step allocates %g times", lora != nil, n)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDecoderStepAllocatesNothing: a decoding step (one token for each of
// several slots) allocates nothing once the decoder has run steps of its
// size: the activations, the logits and the attention's scratch are
// reused, and checking the chunks needs no map (12 slots: a map that large
// would allocate).
func TestDecoderStepAllocatesNothing(t *testing.T) {
	if fedtest.RaceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	if _, serial := (&host{}).gemm(); !serial {
		t.Skip("gonum's pure-Go sgemm (no AVX2) allocates")
	}
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 64, 32, 48, 2
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 4, 2, 32
	m, err := model.New(c, 9)
	if err != nil {
		t.Fatal(err)
	}
	const slots, ctx = 12, 32
	dec, err := NewDecoder(NewHost().(CacheDevice), m, slots, ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var toks [slots][1]int
	chunks := make([]Chunk, slots)
	for s := range chunks {
		toks[s][0] = s + 1
		chunks[s] = Chunk{Slot: s, Tokens: toks[s][:], Logits: true}
	}
	var ferr error
	step := func() {
		if dec.Len(0) == ctx {
			for s := range slots {
				dec.Reset(s)
			}
		}
		if _, err := dec.Forward(chunks); err != nil {
			ferr = err
		}
	}
	for range ctx { // every context length once: the scratch at its largest
		step()
	}
	if n := testing.AllocsPerRun(2*ctx, step); n != 0 {
		t.Errorf("a decoding step of %d slots allocates %v times", slots, n)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
}
