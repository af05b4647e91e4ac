package instruct

import (
	"reflect"
	"testing"

	"github.com/fedtune/fedtune/datasets"
)

func TestBatcher(t *testing.T) {
	var ws []Window
	var toks [][]int
	for i := range 5 {
		w := Window{Tokens: []int{i, i, i}, Mask: []uint8{0, 1, 1}, Segments: []int32{1, 1, 1}, IDs: []string{"x"}}
		ws = append(ws, w)
		toks = append(toks, w.Tokens)
	}
	b := NewBatcher(ws, 2, 9)
	ref := datasets.NewBatcher(toks, 2, 9)
	for range 6 {
		got := NewBatch(b.Next())
		if want := ref.Next(); !reflect.DeepEqual(got.Tokens, want) {
			t.Fatalf("got %v, datasets.Batcher %v", got.Tokens, want)
		}
		if !reflect.DeepEqual(got.Loss[0], []float32{1, 1}) || !reflect.DeepEqual(got.Segments[1], []int32{1, 1}) ||
			!reflect.DeepEqual(got.Positions[0], []int{0, 1}) {
			t.Fatalf("batch %+v", got)
		}
	}
	if b := NewBatcher(nil, 2, 1); b.Next() != nil || b.NextBatch().Tokens != nil {
		t.Error("empty batcher gave a batch")
	}
}
