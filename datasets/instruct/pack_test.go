package instruct

import (
	"reflect"
	"testing"
)

func TestPack(t *testing.T) {
	exs := []Example{
		{ID: "a", Tokens: []int{1, 2, 3}, Mask: []uint8{0, 1, 1}},
		{ID: "b", Tokens: []int{4, 5}, Mask: []uint8{0, 1}},
		{ID: "c", Tokens: []int{6, 7, 8, 9}, Mask: []uint8{0, 0, 1, 1}},
		{ID: "d", Tokens: []int{10, 11, 12, 13, 14, 15, 16}, Mask: []uint8{0, 1, 1, 1, 1, 1, 1}},
	}
	ws, st, err := Pack(exs, 5, 0) // windows of 6 tokens
	if err != nil {
		t.Fatal(err)
	}
	if want := (PackStats{Documents: 4, Windows: 3, Truncated: 1, Padding: 1 + 2}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	w := ws[0]
	if !reflect.DeepEqual(w.Tokens, []int{1, 2, 3, 4, 5, 0}) ||
		!reflect.DeepEqual(w.Segments, []int32{1, 1, 1, 2, 2, 0}) ||
		!reflect.DeepEqual(w.IDs, []string{"a", "b"}) {
		t.Errorf("window 0: %+v", w)
	}
	// Targets: 2 3 4 5 0. Trained: 2, 3 (a's assistant tokens), not 4 (the
	// next document's first token), 5 (b's), not the padding.
	if got, want := w.LossMask(), []float32{1, 1, 0, 1, 0}; !reflect.DeepEqual(got, want) {
		t.Errorf("loss mask %v, want %v", got, want)
	}
	if got, want := w.Positions(), []int{0, 1, 2, 0, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("positions %v, want %v", got, want)
	}
	if !reflect.DeepEqual(w.Inputs(), []int{1, 2, 3, 4, 5}) || !reflect.DeepEqual(w.Targets(), []int{2, 3, 4, 5, 0}) ||
		!reflect.DeepEqual(w.InputSegments(), []int32{1, 1, 1, 2, 2}) {
		t.Error("inputs/targets/segments")
	}
	if !w.Attends(2, 0) || w.Attends(3, 2) || w.Attends(0, 1) || !w.Attends(4, 3) {
		t.Error("attends")
	}
	if !reflect.DeepEqual(ws[1].Tokens, []int{6, 7, 8, 9, 0, 0}) {
		t.Errorf("window 1: %v", ws[1].Tokens)
	}
	if !reflect.DeepEqual(ws[2].Tokens, []int{10, 11, 12, 13, 14, 15}) || ws[2].Segments[5] != 1 {
		t.Errorf("window 2 (truncated): %+v", ws[2])
	}
	if got, want := ws[2].LossMask(), []float32{1, 1, 1, 1, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("window 2 loss mask %v", got)
	}
	if _, _, err := Pack(exs, 0, 0); err == nil {
		t.Error("seqLen 0 packed")
	}
	if _, _, err := Pack([]Example{{ID: "x", Tokens: []int{1}, Mask: nil}}, 4, 0); err == nil {
		t.Error("mask length mismatch packed")
	}
}
