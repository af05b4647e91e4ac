package aggregator

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/kernels"
	"github.com/fedtune/fedtune/model/safetensors"
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
	// A pre-training delta naming its base (and one naming no digest).
	for _, b := range []string{strings.Repeat("ab", 32), "round-3"} {
		tt, err := safetensors.FromFloat32("w", safetensors.F32, []int{2}, []float32{0.5, -1})
		if err != nil {
			f.Fatal(err)
		}
		p := filepath.Join(f.TempDir(), "delta.safetensors")
		if _, err := safetensors.WriteFile(p, []safetensors.Tensor{tt}, map[string]string{MetaKind: KindDelta, MetaBase: b}); err != nil {
			f.Fatal(err)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
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

// FuzzValidate runs Validate (as audit runs it on a rejected update) over
// arbitrary bytes against a real base, with a norm bound: it never fails
// the request, and each rejection wraps ErrInvalidUpdate; an input it
// passes, Aggregate accepts.
func FuzzValidate(f *testing.F) {
	for _, name := range []string{"update0", "update1", "base"} {
		b, err := os.ReadFile(filepath.Join(goldenDir, name+".safetensors"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	base, err := filepath.Abs(filepath.Join(goldenDir, "base.safetensors"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "u.safetensors")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := Options{MaxNorm: 100, Threads: 1}
		rej, err := Validate(context.Background(), Request{Inputs: []Input{{Path: p}}, Base: base, Options: opts})
		if err != nil {
			t.Fatalf("Validate: %v", err)
		}
		for _, r := range rej {
			if !errors.Is(r.Err, ErrInvalidUpdate) {
				t.Fatalf("rejection %v does not wrap ErrInvalidUpdate", r.Err)
			}
		}
		if len(rej) == 0 {
			opts.Strict = true
			if _, err := Aggregate(context.Background(), Request{Strategy: &FedAvg{}, Inputs: []Input{{Path: p}}, Base: base, Options: opts}); err != nil {
				t.Fatalf("Validate passed it, Aggregate: %v", err)
			}
		}
	})
}
