package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/quick"
)

// TestSelectProperties: selection is deterministic, within bounds, a
// sorted subset of the eligible trainers without repeats, and independent
// of the order in which the pool lists them.
func TestSelectProperties(t *testing.T) {
	prop := func(seed, round uint64, nElig uint8, min, max uint8, frac uint16) bool {
		spec := TrainerSpec{Min: int(min%20) + 1, Max: int(max % 25), Fraction: float64(frac%1000+1) / 1000}
		if spec.Max != 0 && spec.Max < spec.Min {
			spec.Max = spec.Min
		}
		var elig []string
		for i := 0; i < int(nElig%40); i++ {
			elig = append(elig, fmt.Sprintf("%064x", i*7919))
		}
		a := Select(seed, round, spec, elig)
		rev := slices.Clone(elig)
		slices.Reverse(rev)
		b := Select(seed, round, spec, rev)
		if !slices.Equal(a, b) {
			return false
		}
		if len(elig) < spec.Min {
			return a == nil
		}
		want := SelectCount(spec, len(elig))
		if len(a) != want || want < spec.Min || (spec.Max > 0 && want > spec.Max) || want > len(elig) {
			return false
		}
		if !slices.IsSorted(a) || len(slices.Compact(slices.Clone(a))) != len(a) {
			return false
		}
		for _, id := range a {
			if !slices.Contains(elig, id) {
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 2000}); err != nil {
		t.Error(err)
	}
}

// TestSelectSpreads: over many rounds every trainer gets picked, and
// rounds differ.
func TestSelectSpreads(t *testing.T) {
	var elig []string
	for i := 0; i < 10; i++ {
		elig = append(elig, fmt.Sprintf("%064x", i))
	}
	spec := TrainerSpec{Min: 3, Max: 3, Fraction: 1}
	count := map[string]int{}
	distinct := map[string]bool{}
	for r := uint64(1); r <= 1000; r++ {
		s := Select(1, r, spec, elig)
		distinct[fmt.Sprint(s)] = true
		for _, id := range s {
			count[id]++
		}
	}
	for _, id := range elig {
		// Expected 300 each; a fair draw stays well inside [200, 400].
		if c := count[id]; c < 200 || c > 400 {
			t.Errorf("%s picked %d times of 1000 rounds", id[60:], c)
		}
	}
	if len(distinct) < 100 {
		t.Errorf("only %d distinct selections", len(distinct))
	}
}

func TestSelectCount(t *testing.T) {
	for _, tc := range []struct {
		spec      TrainerSpec
		available int
		want      int
	}{
		{TrainerSpec{Min: 2, Fraction: 1}, 1, 0},
		{TrainerSpec{Min: 2, Fraction: 1}, 5, 5},
		{TrainerSpec{Min: 2, Max: 3, Fraction: 1}, 5, 3},
		{TrainerSpec{Min: 2, Fraction: 0.5}, 10, 5},
		{TrainerSpec{Min: 4, Fraction: 0.1}, 10, 4},
		{TrainerSpec{Min: 1, Fraction: 0.01}, 10, 1},
	} {
		if got := SelectCount(tc.spec, tc.available); got != tc.want {
			t.Errorf("SelectCount(%+v, %d) = %d, want %d", tc.spec, tc.available, got, tc.want)
		}
	}
}

func TestPool(t *testing.T) {
	p := NewPool()
	a, b, c := fmt.Sprintf("%064x", 1), fmt.Sprintf("%064x", 2), fmt.Sprintf("%064x", 3)
	if err := p.Join(a, []string{"d1"}); !errors.Is(err, ErrNotMember) {
		t.Fatalf("join before membership: %v", err)
	}
	p.SetMembers([]string{a, b, c})
	for id, ds := range map[string][]string{a: {"d1"}, b: {"d2", "d3"}, c: nil} {
		if err := p.Join(id, ds); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Eligible(nil); !slices.Equal(got, []string{a, b}) {
		t.Errorf("any dataset: %v (a trainer without datasets is not eligible)", got)
	}
	if got := p.Eligible([]string{"d3"}); !slices.Equal(got, []string{b}) {
		t.Errorf("manifest d3: %v", got)
	}
	if dropped := p.SetMembers([]string{b, c}); !slices.Equal(dropped, []string{a}) || p.Joined(a) {
		t.Errorf("removed member stays joined: %v", dropped)
	}
	if !p.Leave(b) || p.Leave(b) {
		t.Error("Leave")
	}
}
