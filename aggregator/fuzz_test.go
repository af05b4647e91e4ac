package aggregator

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedtune/fedtune/kernels"
)

// FuzzParseUpdate feeds arbitrary bytes to the update decoder: it must
// either reject them with an ErrInvalidUpdate error or decode every
// logical tensor, in whole and in odd-sized chunks, to the same values.
func FuzzParseUpdate(f *testing.F) {
	for _, name := range []string{"update0", "update1", "update3", "update5", "base"} {
		b, err := os.ReadFile(filepath.Join(goldenDir, name+".safetensors"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	dec := NewDecoder(kernels.Reference{})
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := ParseUpdate("fuzz", bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrInvalidUpdate) {
				t.Fatalf("error %v does not wrap ErrInvalidUpdate", err)
			}
			return
		}
		for _, ti := range u.Tensors() {
			n := ti.NumElements()
			if n > 1<<20 {
				continue
			}
			whole := make([]float32, n)
			if err := dec.Read(u, ti.Name, 0, whole); err != nil {
				t.Fatalf("read %s: %v", ti.Name, err)
			}
			part := make([]float32, n)
			for off := int64(0); off < n; off += 3 {
				if err := dec.Read(u, ti.Name, off, part[off:min(off+3, n)]); err != nil {
					t.Fatalf("read %s at %d: %v", ti.Name, off, err)
				}
			}
			for i := range whole {
				if whole[i] != part[i] && !(whole[i] != whole[i] && part[i] != part[i]) {
					t.Fatalf("%s[%d]: whole read %v, chunked read %v", ti.Name, i, whole[i], part[i])
				}
			}
		}
	})
}
