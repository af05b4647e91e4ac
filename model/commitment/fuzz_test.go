package commitment

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzDigests feeds a trainer's disclosed steps.json (outside bytes) to
// Store.Digests: it must return valid digests or an error, never panic.
func FuzzDigests(f *testing.F) {
	f.Add([]byte(`{"digests":["` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"]}`))
	f.Add([]byte(`{"digests":[]}`))
	f.Add([]byte(`{"digests":["AB"]}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Store{Dir: t.TempDir()}
		p, err := s.Path("job", 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(p), DigestsFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		ds, err := s.Digests("job", 1)
		if err != nil {
			return
		}
		if _, err := StepRoot(ds); err != nil {
			t.Fatalf("Digests returned %v, which StepRoot refuses: %v", ds, err)
		}
	})
}

// FuzzInputs feeds a trainer's disclosed inputs.json (outside bytes) to
// Store.Inputs: it must return valid inputs that digest, or an error,
// never panic.
func FuzzInputs(f *testing.F) {
	d := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	f.Add([]byte(`{"base_model":"` + d + `","hyperparams":{"steps":1,"batch":1,"seq_len":4,"lr":0.1,"weight_decay":0,"clip_norm":0,"beta1":0.9,"beta2":0.999,"eps":1e-8,"warmup":0,"schedule":"constant","seed":1},"batches":[["a"]]}`))
	f.Add([]byte(`{"base_model":"` + d + `","hyperparams":{"steps":2},"batches":[["a"]]}`))
	f.Add([]byte(`{"base_model":"x","BASE_MODEL":"y"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Store{Dir: t.TempDir()}
		p, err := s.Path("job", 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(p), InputsFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		in, err := s.Inputs("job", 1)
		if err != nil {
			return
		}
		if _, err := in.Digest(); err != nil {
			t.Fatalf("Inputs returned %+v, which Digest refuses: %v", in, err)
		}
		_ = in.Differences(&in)
	})
}
