package ledger

import (
	"fmt"
	"testing"
	"testing/quick"
)

func TestAssignRanges(t *testing.T) {
	refs := []PublishedRef{{Digest: hexDigest("a"), Samples: 100}, {Digest: hexDigest("b"), Samples: 7}}
	trainers := []string{"t1", "t2", "t3"}
	rs, err := AssignRanges(42, 1, refs, 10, trainers)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 6 {
		t.Fatalf("%d ranges, want 6", len(rs))
	}
	for _, r := range rs {
		want := uint64(10)
		if r.Dataset == hexDigest("b") {
			want = 2 // ⌊7/3⌋
		}
		if r.End-r.First != want {
			t.Errorf("%+v: size %d, want %d", r, r.End-r.First, want)
		}
	}
	again, _ := AssignRanges(42, 1, refs, 10, trainers)
	if fmt.Sprint(again) != fmt.Sprint(rs) {
		t.Fatal("not deterministic")
	}
	other, _ := AssignRanges(42, 2, refs, 10, trainers)
	if fmt.Sprint(other) == fmt.Sprint(rs) {
		t.Fatal("round 2 has round 1's ranges")
	}
	if _, err := AssignRanges(1, 1, []PublishedRef{{Digest: hexDigest("c"), Samples: 2}}, 5, trainers); err == nil {
		t.Fatal("2 samples for 3 trainers accepted")
	}
	if _, err := AssignRanges(1, 1, refs, 0, trainers); err == nil {
		t.Fatal("range_samples 0 accepted")
	}
}

// Ranges of one round are disjoint and inside the dataset, whatever the
// seed, round, sizes and trainer count.
func TestAssignRangesDisjoint(t *testing.T) {
	f := func(seed, round uint64, n16 uint16, per8, t8 uint8) bool {
		nt := int(t8%20) + 1
		n := uint64(n16)%5000 + uint64(nt)
		per := uint64(per8) + 1
		var trainers []string
		for i := range nt {
			trainers = append(trainers, fmt.Sprint("t", i))
		}
		rs, err := AssignRanges(seed, round, []PublishedRef{{Digest: hexDigest("d"), Samples: n}}, per, trainers)
		if err != nil || len(rs) != nt {
			return false
		}
		used := map[uint64]bool{}
		for i, r := range rs {
			if r.Trainer != trainers[i] || r.First >= r.End || r.End > n {
				return false
			}
			for s := r.First; s < r.End; s++ {
				if used[s] {
					return false
				}
				used[s] = true
			}
		}
		return true
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
}
