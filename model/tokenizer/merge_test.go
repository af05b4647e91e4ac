package tokenizer

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// naiveMerge is the reference: merge the lowest-ranked pair, leftmost first,
// one pair at a time.
func naiveMerge(ranks map[pair]int, syms []string) []string {
	syms = append([]string(nil), syms...)
	for {
		best, bestRank := -1, 0
		for i := 0; i+1 < len(syms); i++ {
			if r, ok := ranks[pair{syms[i], syms[i+1]}]; ok && (best < 0 || r < bestRank) {
				best, bestRank = i, r
			}
		}
		if best < 0 {
			return syms
		}
		syms = append(syms[:best], append([]string{syms[best] + syms[best+1]}, syms[best+2:]...)...)
	}
}

func TestMergeMatchesReference(t *testing.T) {
	// Merges over {a, b} in an order where new pairs can outrank pending ones.
	merges := [][2]string{{"a", "a"}, {"aa", "b"}, {"b", "a"}, {"aab", "a"}, {"a", "b"}, {"ba", "ba"}, {"aa", "aa"}, {"b", "b"}, {"bb", "aa"}}
	tok := &BPE{ranks: map[pair]int{}}
	for i, m := range merges {
		tok.ranks[pair{m[0], m[1]}] = i
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		syms := make([]string, 1+r.IntN(14))
		for i := range syms {
			syms[i] = string("ab"[r.IntN(2)])
		}
		want := naiveMerge(tok.ranks, syms)
		got := tok.merge(append([]string(nil), syms...))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("merge(%v) = %v, want %v", syms, got, want)
		}
	}
}

func TestMergeLongWord(t *testing.T) {
	// A ByteLevel pre-tokenizer without its regex makes the whole text (here
	// 96 KB) one word, which the heap merges in O(n log n).
	data := edit(t, `"use_regex": true
  },
  "post_processor"`, `"use_regex": false
  },
  "post_processor"`)
	tok, err := DecodeBPE(data)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("the cat sat on the mat\n\n", 4000)
	ids := tok.Encode(text)
	if tok.Decode(ids) != text {
		t.Error("round trip failed")
	}
	// Each repetition ends with ĊĊ (265).
	if ids[len(ids)-1] != 265 {
		t.Errorf("last id %d, want 265", ids[len(ids)-1])
	}
}
