package commitment

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
)

func TestStoreProve(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	var ds []string
	for step := 1; step <= 5; step++ {
		ts, err := Tensors(map[string]*model.Tensor{"w": {Shape: []int{2}, Data: []float32{float32(step), 1}}})
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.Save("j", 2, step, ts)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if err := s.SaveDigests("j", 2, ds); err != nil {
		t.Fatal(err)
	}
	root, err := StepRoot(ds)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Digests("j", 2)
	if err != nil || !slices.Equal(got, ds) {
		t.Fatalf("Digests = %v, %v", got, err)
	}
	steps, err := s.Steps("j", 2)
	if err != nil || !slices.Equal(steps, []int{1, 2, 3, 4, 5}) {
		t.Fatalf("Steps = %v, %v", steps, err)
	}
	// Step 4's file replaced by step 5's: a lie.
	p4, _ := s.Path("j", 2, 4)
	p5, _ := s.Path("j", 2, 5)
	data, err := os.ReadFile(p5)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p4, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		step      int
		steps     uint64
		disclosed []string
		want      string // "" proves
	}{
		{"honest", 3, 5, ds, ""},
		{"first", 1, 5, ds, ""},
		{"last", 5, 5, ds, ""},
		{"swapped file", 4, 5, ds, "the checkpoint of step 4"},
		{"short disclosure", 3, 5, ds[:4], "discloses 4 step digests for 5"},
		{"missing file", 6, 6, append(slices.Clone(ds), ds[0]), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.Prove("j", 2, root, tc.steps, tc.step, tc.disclosed)
			if tc.want == "" && c.Err != nil || tc.want != "" && (c.Err == nil || !strings.Contains(c.Err.Error(), tc.want)) {
				t.Fatalf("Prove step %d: %v, want %q", tc.step, c.Err, tc.want)
			}
		})
	}
	if _, err := s.Digests("j", 9); err == nil {
		t.Error("Digests of a round with none: no error")
	}
	if steps, err := s.Steps("j", 9); err != nil || steps != nil {
		t.Errorf("Steps of a round with none = %v, %v", steps, err)
	}
}
