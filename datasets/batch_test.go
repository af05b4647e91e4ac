package datasets

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"testing"
)

func numbered(n int) *Dataset {
	d := &Dataset{Name: "n"}
	for i := range n {
		d.Samples = append(d.Samples, Sample{ID: fmt.Sprintf("f.txt:%d", i+1), Text: fmt.Sprint(i)})
	}
	return d
}

func ids(d *Dataset) []string {
	var out []string
	for _, s := range d.Samples {
		out = append(out, s.ID)
	}
	return out
}

func TestSplit(t *testing.T) {
	d := numbered(1000)
	train, eval := d.Split(0.1, 7)
	if len(train.Samples)+len(eval.Samples) != 1000 {
		t.Fatalf("split lost samples: %d + %d", len(train.Samples), len(eval.Samples))
	}
	if n := len(eval.Samples); n < 70 || n > 130 {
		t.Errorf("eval has %d of 1000 samples at evalFrac 0.1", n)
	}
	if train.Name != "n/train" || eval.Name != "n/eval" {
		t.Errorf("names %q %q", train.Name, eval.Name)
	}
	seen := map[string]bool{}
	for _, s := range append(append([]Sample{}, train.Samples...), eval.Samples...) {
		if seen[s.ID] {
			t.Fatalf("sample %s in both parts", s.ID)
		}
		seen[s.ID] = true
	}
	// Same seed, same split; another seed, another split.
	train2, eval2 := d.Split(0.1, 7)
	if !reflect.DeepEqual(ids(train), ids(train2)) || !reflect.DeepEqual(ids(eval), ids(eval2)) {
		t.Error("split is not deterministic")
	}
	_, eval3 := d.Split(0.1, 8)
	if reflect.DeepEqual(ids(eval), ids(eval3)) {
		t.Error("seed does not change the split")
	}
	// Adding samples does not move the existing ones.
	bigger := numbered(1500)
	_, evalB := bigger.Split(0.1, 7)
	inEval := map[string]bool{}
	for _, s := range evalB.Samples {
		inEval[s.ID] = true
	}
	for _, s := range d.Samples {
		want := false
		for _, e := range eval.Samples {
			if e.ID == s.ID {
				want = true
			}
		}
		if inEval[s.ID] != want {
			t.Fatalf("sample %s moved when samples were added", s.ID)
		}
	}
	// Order is kept.
	for _, part := range []*Dataset{train, eval} {
		for i := 1; i < len(part.Samples); i++ {
			a, _ := strconv.Atoi(part.Samples[i-1].Text)
			b, _ := strconv.Atoi(part.Samples[i].Text)
			if a >= b {
				t.Fatalf("%s order changed at %d", part.Name, i)
			}
		}
	}
}

func TestSplitNeverEmpty(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 10} {
		for _, frac := range []float64{-1, 0, 1e-9, 0.5, 1 - 1e-9, 1, 2, math.NaN()} {
			for seed := range uint64(5) {
				train, eval := numbered(n).Split(frac, seed)
				nt, ne := len(train.Samples), len(eval.Samples)
				if nt+ne != n {
					t.Fatalf("n=%d frac=%v: %d+%d samples", n, frac, nt, ne)
				}
				if n >= 2 && (nt == 0 || ne == 0) {
					t.Fatalf("n=%d frac=%v seed=%d: train %d eval %d", n, frac, seed, nt, ne)
				}
			}
		}
	}
}

type runeEnc struct{}

func (runeEnc) Encode(s string) []int {
	var out []int
	for _, r := range s {
		out = append(out, int(r))
	}
	return out
}

func TestTokenize(t *testing.T) {
	d := &Dataset{Samples: []Sample{{"a", "hi"}, {"b", "é"}}}
	got := Tokenize(d, runeEnc{})
	want := []int{'h', 'i', '\n', 'é', '\n'}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Tokenize = %v, want %v", got, want)
	}
	if got := Tokenize(&Dataset{}, runeEnc{}); len(got) != 0 {
		t.Errorf("empty dataset gave %v", got)
	}
}

func TestWindows(t *testing.T) {
	seq := func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	tests := []struct {
		n, seqLen int
		want      [][]int
	}{
		{10, 3, [][]int{{0, 1, 2, 3}, {3, 4, 5, 6}, {6, 7, 8, 9}}},
		{9, 3, [][]int{{0, 1, 2, 3}, {3, 4, 5, 6}}},
		{4, 3, [][]int{{0, 1, 2, 3}}},
		{3, 3, nil},
		{5, 1, [][]int{{0, 1}, {1, 2}, {2, 3}, {3, 4}}},
		{5, 0, nil},
		{5, -2, nil},
		{0, 4, nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("n%d_seq%d", tc.n, tc.seqLen), func(t *testing.T) {
			got := Windows(seq(tc.n), tc.seqLen)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Windows = %v, want %v", got, tc.want)
			}
		})
	}
	w := Windows(seq(10), 3)
	_ = append(w[0], 99)
	if w[1][0] != 3 {
		t.Error("appending to a window overwrote the next one")
	}
}

func TestBatcher(t *testing.T) {
	windows := Windows(make([]int, 0), 4)
	if b := NewBatcher(windows, 3, 1); b.Next() != nil {
		t.Error("Next on no windows is not nil")
	}
	windows = nil
	for i := range 10 {
		windows = append(windows, []int{i, i + 1})
	}
	take := func(seed uint64, batch, n int) [][]int {
		b := NewBatcher(windows, batch, seed)
		var out [][]int
		for range n {
			bt := b.Next()
			if len(bt) != max(batch, 1) {
				t.Fatalf("batch of %d, want %d", len(bt), batch)
			}
			out = append(out, bt...)
		}
		return out
	}
	a, b := take(5, 3, 20), take(5, 3, 20)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed gave different batches")
	}
	if reflect.DeepEqual(a, take(6, 3, 20)) {
		t.Error("different seeds gave the same batches")
	}
	// Every epoch is a permutation, and epochs differ.
	flat := take(5, 1, 30)
	var epochs [][]int
	for e := range 3 {
		seen := map[int]bool{}
		var order []int
		for _, w := range flat[e*10 : e*10+10] {
			if seen[w[0]] {
				t.Fatalf("epoch %d repeats window %d", e, w[0])
			}
			seen[w[0]] = true
			order = append(order, w[0])
		}
		epochs = append(epochs, order)
	}
	if reflect.DeepEqual(epochs[0], epochs[1]) && reflect.DeepEqual(epochs[1], epochs[2]) {
		t.Error("epochs are not reshuffled")
	}
	// The stream does not depend on the batch size.
	if !reflect.DeepEqual(take(5, 3, 10), flat[:30]) {
		t.Error("batch size changed the window order")
	}
	// A batch larger than the windows wraps into the next epoch.
	big := NewBatcher(windows, 25, 5)
	bt := big.Next()
	if len(bt) != 25 || !reflect.DeepEqual(bt, flat[:25]) {
		t.Errorf("wrapped batch = %v", bt)
	}
	if big.Epoch() != 2 || big.Len() != 10 {
		t.Errorf("Epoch = %d, Len = %d", big.Epoch(), big.Len())
	}
	if NewBatcher(windows, 0, 1).Next() == nil {
		t.Error("batch 0 gave nothing")
	}
}
