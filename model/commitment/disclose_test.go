package commitment

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/digest"
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

func TestInputsDisclosure(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	d := digest.Bytes([]byte("base"))
	in := Inputs{BaseModel: d, Hyperparams: Hyperparams{Steps: 2, Batch: 1, SeqLen: 4, LR: 0.1, Seed: 3, Schedule: "constant"},
		Batches: [][]string{{"s1", "s2"}, {"s3"}}}
	if err := s.SaveInputs("job", 2, in); err != nil {
		t.Fatal(err)
	}
	got, err := s.Inputs("job", 2)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := in.Digest()
	if gd, _ := got.Digest(); gd != want {
		t.Fatalf("read back inputs digest %s, saved %s", gd, want)
	}
	if diff := got.Differences(&in); len(diff) != 0 {
		t.Fatalf("the same inputs differ: %v", diff)
	}
	other := in
	other.Hyperparams.Seed = 4
	other.Batches = [][]string{{"s1", "s2"}, {"s9"}}
	diff := other.Differences(&in)
	if len(diff) != 2 || diff[0] != "seed 4, the task's 3" || diff[1] != "step 2's batch samples [s9], the replay's [s3]" {
		t.Fatalf("differences %q", diff)
	}
	if err := s.SaveInputs("job", 2, Inputs{BaseModel: d}); err == nil {
		t.Fatal("invalid inputs saved")
	}
	for _, bad := range []struct{ name, data, want string }{
		{"duplicate key", `{"base_model":"` + d + `","base_model":"` + d + `"}`, "duplicate"},
		{"unknown field", `{"base_model":"` + d + `","extra":1}`, "extra"},
		{"invalid", `{"base_model":"` + d + `","hyperparams":{"steps":1},"batches":[]}`, "batches: 0 listed for 1 steps"},
	} {
		p, _ := s.Path("job", 2, 1)
		if err := os.WriteFile(filepath.Join(filepath.Dir(p), InputsFile), []byte(bad.data), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Inputs("job", 2); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error saying %q", bad.name, err, bad.want)
		}
	}
}
