package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
)

// decoderTol bounds |Decoder logit − Runner logit| (absolute; the test
// models' logits are of order 1): the two differ only in the order
// attention sums in float32.
const decoderTol = 1e-5

// decoderCase is a model to run the decoder on.
type decoderCase struct {
	name string
	m    *model.Model
}

// decoderCases are modeltest's variants (MHA, GQA, MQA, tied, …), two
// models with heads of 8 and 72, and the LoRA-adapted tiny model (merged,
// as generate and serve load it), last.
func decoderCases(t *testing.T) []decoderCase {
	t.Helper()
	var cs []decoderCase
	for i, v := range modeltest.Variants {
		cs = append(cs, decoderCase{v.Name, modeltest.VariantModel(t, v, uint64(300+i))})
	}
	// Heads whose size is a multiple of 8 run CachedAttention's assembly
	// loops on the Host (the variants' heads are smaller): 8 (one 8-wide
	// block) with GQA, 72 (a 64-wide block and an 8-wide one) with MQA.
	for i, hd := range []int{8, 72} {
		c := modeltest.TinyConfig()
		c.HeadDim = hd
		if hd == 72 {
			c.NumKeyValueHeads = 1
		}
		m, err := model.New(c, uint64(400+i))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, decoderCase{fmt.Sprintf("head-dim-%d", hd), m})
	}
	m, ad := modeltest.AdaptedModel(t)
	merged, err := m.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	cs = append(cs, decoderCase{"lora-merged", merged})
	return cs
}

func maxAbsDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// runChunks feeds ids to slot 0 of a fresh decoder in chunks of the given
// sizes (the rest one token at a time) and returns the logits of every
// position from the chunk ends onwards: row i of the result is position
// start+i, where start is the first chunk's last position.
func runChunks(t *testing.T, m *model.Model, ids []int, sizes []int) (rows [][]float32, first int) {
	t.Helper()
	dec, err := engine.NewDecoder(engine.NewHost().(engine.CacheDevice), m, 2, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := dec.Close(); err != nil {
			t.Error(err)
		}
	}()
	p := 0
	first = -1
	for p < len(ids) {
		n := 1
		if len(sizes) > 0 {
			n, sizes = sizes[0], sizes[1:]
		}
		out, err := dec.Forward([]engine.Chunk{{Slot: 1, Tokens: ids[p : p+n], Logits: true}})
		if err != nil {
			t.Fatal(err)
		}
		p += n
		if first < 0 {
			first = p - 1
		}
		rows = append(rows, slices.Clone(out))
		if dec.Len(1) != p {
			t.Fatalf("Len = %d after %d tokens", dec.Len(1), p)
		}
	}
	return rows, first
}

// TestDecoderMatchesRunner: prefill then one token per step gives, at each
// step, the logits the full recompute gives for that position.
func TestDecoderMatchesRunner(t *testing.T) {
	for i, dc := range decoderCases(t) {
		t.Run(dc.name, func(t *testing.T) {
			m := dc.m
			V := m.Config.VocabSize
			ids := modeltest.IDs(m.Config.MaxPositionEmbeddings, V, uint64(i))
			r, err := engine.NewRunner(engine.NewHost(), m)
			if err != nil {
				t.Fatal(err)
			}
			want, err := r.Logits(ids)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			for _, sizes := range [][]int{{7}, {1}, {3, 5, 2}, {len(ids)}} {
				rows, first := runChunks(t, m, ids, sizes)
				var worst float64
				p := first
				for k, row := range rows {
					if k > 0 {
						p++
						if k < len(sizes) {
							p += sizes[k] - 1
						}
					}
					worst = math.Max(worst, maxAbsDiff(row, want[p*V:(p+1)*V]))
				}
				if worst > decoderTol {
					t.Errorf("chunks %v: decoder logits differ from the runner's by %g (tolerance %g)", sizes, worst, decoderTol)
				}
			}
		})
	}
}

// TestDecoderBatchInvariant: a sequence's logits are bit-identical whether
// its tokens run alone or in one batch with other sequences' prefills and
// decoding steps.
func TestDecoderBatchInvariant(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[1], 77) // GQA
	V := m.Config.VocabSize
	host := engine.NewHost().(engine.CacheDevice)
	const slots = 4
	seqs := make([][]int, slots)
	for s := range seqs {
		seqs[s] = modeltest.IDs(12+3*s, V, uint64(40+s))
	}
	// Alone: prefill 5, then one token at a time.
	alone := make([][][]float32, slots)
	for s, ids := range seqs {
		rows, _ := runChunks(t, m, ids, []int{5})
		alone[s] = rows
	}
	// Together: sequence s joins at step s; all share each step.
	dec, err := engine.NewDecoder(host, m, slots, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	together := make([][][]float32, slots)
	pos := make([]int, slots)
	for step := 0; ; step++ {
		var chunks []engine.Chunk
		var who []int
		for s := slots - 1; s >= 0; s-- { // another order than the slots'
			if step < s || pos[s] >= len(seqs[s]) {
				continue
			}
			n := 1
			if pos[s] == 0 {
				n = 5
			}
			chunks = append(chunks, engine.Chunk{Slot: s, Tokens: seqs[s][pos[s] : pos[s]+n], Logits: true})
			who = append(who, s)
			pos[s] += n
		}
		if len(chunks) == 0 {
			break
		}
		out, err := dec.Forward(chunks)
		if err != nil {
			t.Fatal(err)
		}
		for k, s := range who {
			together[s] = append(together[s], slices.Clone(out[k*V:(k+1)*V]))
		}
	}
	for s := range seqs {
		if fmt.Sprint(alone[s]) != fmt.Sprint(together[s]) {
			t.Errorf("sequence %d: logits differ between running alone and batched", s)
		}
	}
}

func TestDecoderErrors(t *testing.T) {
	m := modeltest.VariantModel(t, modeltest.Variants[0], 5)
	host := engine.NewHost().(engine.CacheDevice)
	if _, err := engine.NewDecoder(host, m, 1, m.Config.MaxPositionEmbeddings+1); err == nil {
		t.Error("a context beyond max_position_embeddings was accepted")
	}
	if _, err := engine.NewDecoder(host, m, 0, 4); err == nil {
		t.Error("zero slots accepted")
	}
	dec, err := engine.NewDecoder(host, m, 2, 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		chunks []engine.Chunk
		is     error
	}{
		{"slot", []engine.Chunk{{Slot: 2, Tokens: []int{1}}}, engine.ErrSlot},
		{"twice", []engine.Chunk{{Slot: 0, Tokens: []int{1}}, {Slot: 0, Tokens: []int{2}}}, engine.ErrSlot},
		{"full", []engine.Chunk{{Slot: 0, Tokens: []int{1, 2, 3, 4, 5}}}, model.ErrContextFull},
		{"vocab", []engine.Chunk{{Slot: 0, Tokens: []int{m.Config.VocabSize}}}, nil},
		{"empty", []engine.Chunk{{Slot: 1}}, nil},
	} {
		if _, err := dec.Forward(tc.chunks); err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.is)
		}
	}
	if dec.Len(0) != 0 || dec.Len(1) != 0 {
		t.Error("a rejected forward changed the cache")
	}
	if _, err := dec.Forward([]engine.Chunk{{Slot: 0, Tokens: []int{1, 2, 3, 4}}}); err != nil {
		t.Fatal(err)
	}
	dec.Reset(0)
	if _, err := dec.Forward([]engine.Chunk{{Slot: 0, Tokens: []int{1, 2, 3, 4}}}); err != nil {
		t.Errorf("after Reset: %v", err)
	}
	if err := dec.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := dec.Forward([]engine.Chunk{{Slot: 1, Tokens: []int{1}}}); err == nil {
		t.Error("forward after Close")
	}
}

// TestGenerateCachedMatchesFull: engine.Generate (KV cache) gives the
// tokens of the full-recompute path (model.Generate on a Runner), greedy
// and sampled, on every test model, including up to a full context.
func TestGenerateCachedMatchesFull(t *testing.T) {
	ctx := context.Background()
	for i, dc := range decoderCases(t) {
		t.Run(dc.name, func(t *testing.T) {
			m := dc.m
			for _, gc := range []model.GenerateConfig{
				{MaxTokens: 12},
				{MaxTokens: 40},
				{MaxTokens: 12, Temperature: 0.9, TopP: 0.9, Seed: 7},
				{MaxTokens: 12, Temperature: 1.5, Seed: 8, Stop: []int{3, 4, 5}},
			} {
				prompt := modeltest.IDs(5+i%4, m.Config.VocabSize, uint64(i))
				got, err := engine.Generate(ctx, engine.NewHost(), m, prompt, gc)
				if err != nil {
					t.Fatal(err)
				}
				r, err := engine.NewRunner(engine.NewHost(), m)
				if err != nil {
					t.Fatal(err)
				}
				want, err := model.Generate(ctx, &m.Config, r, prompt, gc)
				r.Close()
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%+v: cached %v, full recompute %v", gc, got, want)
				}
			}
		})
	}
}
