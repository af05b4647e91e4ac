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
