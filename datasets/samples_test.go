package datasets

import (
	"fmt"
	"slices"
	"testing"
)

// byteEncoder encodes each byte as its own token.
type byteEncoder struct{}

func (byteEncoder) Encode(s string) []int {
	out := make([]int, len(s))
	for i := range len(s) {
		out[i] = int(s[i])
	}
	return out
}

func TestWindowSamples(t *testing.T) {
	tests := []struct {
		texts  []string
		seqLen int
		want   [][]int
	}{
		// "ab\n" "c\n" "defg\n": stream of 10 tokens, ends 3 5 10.
		{[]string{"ab", "c", "defg"}, 2, [][]int{{0}, {0, 1}, {1, 2}, {2}}},
		{[]string{"ab", "c", "defg"}, 4, [][]int{{0, 1}, {1, 2}}},
		{[]string{"ab", "c", "defg"}, 9, [][]int{{0, 1, 2}}},
		{[]string{"ab", "c", "defg"}, 10, nil},
		{[]string{"abcdefgh", "i"}, 3, [][]int{{0}, {0}, {0, 1}}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.texts, tt.seqLen), func(t *testing.T) {
			d := &Dataset{}
			for i, s := range tt.texts {
				d.Samples = append(d.Samples, Sample{ID: fmt.Sprint(i), Text: s})
			}
			toks, ends := TokenizeSpans(d, byteEncoder{})
			if !slices.Equal(toks, Tokenize(d, byteEncoder{})) {
				t.Fatal("TokenizeSpans tokens differ from Tokenize's")
			}
			got := WindowSamples(ends, len(toks), tt.seqLen)
			if len(got) != len(Windows(toks, tt.seqLen)) {
				t.Fatalf("%d window sample lists for %d windows", len(got), len(Windows(toks, tt.seqLen)))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("WindowSamples = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBatcherLast(t *testing.T) {
	ws := make([][]int, 5)
	for i := range ws {
		ws[i] = []int{i * 10}
	}
	b := NewBatcher(ws, 3, 7)
	if b.Last() != nil {
		t.Fatal("Last before the first batch is not nil")
	}
	for range 6 {
		batch := b.Next()
		last := b.Last()
		if len(last) != len(batch) {
			t.Fatalf("Last has %d indices for a batch of %d", len(last), len(batch))
		}
		for i, w := range batch {
			if w[0] != last[i]*10 {
				t.Fatalf("batch row %d is window %d, Last says %d", i, w[0]/10, last[i])
			}
		}
	}
}

func TestSampleIDsAreManifestLeaves(t *testing.T) {
	d := &Dataset{Samples: []Sample{{ID: "a:1", Text: "x"}, {ID: "a:2", Text: "y"}}}
	hs, _ := SampleHashes(d)
	tree := NewTree(hs)
	for _, id := range SampleIDs(d) {
		found := false
		for _, l := range tree.Leaves() {
			if fmt.Sprintf("%x", l) == id {
				found = true
			}
		}
		if !found {
			t.Fatalf("sample ID %s is not a manifest leaf", id)
		}
	}
}
