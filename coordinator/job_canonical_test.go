package coordinator

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model"
)

// canonicalJobs returns the canonical encodings of every job in configs/jobs.
func canonicalJobs(t testing.TB) map[string][]byte {
	files, err := filepath.Glob(filepath.Join("..", "configs", "jobs", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("configs/jobs: %v (%d files)", err, len(files))
	}
	out := map[string][]byte{}
	for _, p := range files {
		j, err := LoadJob(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = j.Canonical()
	}
	return out
}

// TestDecodeCanonical: every shipped job's canonical encoding decodes to a
// job with the same digest and fine-tuning settings; bytes with another
// reading than their canonical one are refused, each with its reason.
func TestDecodeCanonical(t *testing.T) {
	for name, c := range canonicalJobs(t) {
		j, err := DecodeCanonical(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(j.Canonical(), c) {
			t.Errorf("%s: decoded job encodes to other bytes", name)
		}
	}
	golden, err := os.ReadFile(filepath.Join("testdata", "demo-lora.canonical"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(golden), "\n")
	good := []byte(lines[0])
	j, err := DecodeCanonical(good)
	if err != nil {
		t.Fatal(err)
	}
	if j.Digest() != lines[1] || j.FineTune.Mode != model.ModeLoRA || j.FineTune.LoRA == nil || j.FineTune.LoRA.Rank == 0 {
		t.Fatalf("demo-lora: digest %s (want %s), finetune %+v", j.Digest(), lines[1], j.FineTune)
	}
	full := strings.Replace(string(good), `"mode":"lora"`, `"mode":"full"`, 1)
	for _, tc := range []struct{ name, data, want string }{
		{"empty", "", "EOF"},
		{"not JSON", "name: x", "invalid character"},
		{"unknown key", strings.Replace(string(good), `{"name":`, `{"extra":1,"name":`, 1), "unknown field"},
		{"duplicate key", strings.Replace(string(good), `{"name":`, `{"name":"other","name":`, 1), "not in canonical form"},
		{"key case", strings.Replace(string(good), `{"name":`, `{"NAME":`, 1), "not in canonical form"},
		{"whitespace", " " + string(good), "not in canonical form"},
		{"trailing value", string(good) + "{}", "not in canonical form"},
		{"full with an adapter", full, "finetune.lora is set"},
		{"invalid", strings.Replace(string(good), `"rounds":`, `"rounds":-`, 1), "rounds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCanonical([]byte(tc.data))
			if err == nil || !errors.Is(err, ErrJob) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrJob saying %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeCanonical: decoding never panics, and an accepted job encodes
// back to exactly the bytes decoded.
func FuzzDecodeCanonical(f *testing.F) {
	for _, c := range canonicalJobs(f) {
		f.Add(c)
	}
	f.Add([]byte(`{"name":"j"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := DecodeCanonical(data)
		if err != nil {
			if !errors.Is(err, ErrJob) {
				t.Fatalf("error does not wrap ErrJob: %v", err)
			}
			return
		}
		if !bytes.Equal(j.Canonical(), data) {
			t.Fatalf("accepted bytes that are not canonical:\n%s\n%s", data, j.Canonical())
		}
	})
}
