package instruct

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets"
)

func TestReadDataset(t *testing.T) {
	p := "../testdata/instruct/heldout.jsonl"
	d, f, err := ReadDataset(p)
	if err != nil || f != Messages || len(d.Samples) != 100 || d.Name != "heldout.jsonl" {
		t.Fatalf("%v %s %v", d, f, err)
	}
	data, _ := os.ReadFile(p)
	first, _, _ := strings.Cut(string(data), "\n")
	if d.Samples[0].Text != first || d.Samples[0].ID != "heldout.jsonl:1" {
		t.Errorf("sample 0 %+v", d.Samples[0])
	}
	want, _, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	got, f, err := Records(d)
	if err != nil || f != Messages || !reflect.DeepEqual(got, want) {
		t.Errorf("records differ from Read's: %v", err)
	}
	if _, _, err := datasets.BuildManifest(d, datasets.ManifestOptions{Name: "heldout", Format: "jsonl", Licence: "CC0-1.0", Source: "fedtune datasets/testdata/instruct", Owner: strings.Repeat("ab", 32)}); err != nil {
		t.Errorf("manifest: %v", err)
	}
	train, eval := d.Split(0.2, 7)
	if len(train.Samples)+len(eval.Samples) != 100 {
		t.Error("split lost samples")
	}
	if _, _, err := Records(eval); err != nil {
		t.Error(err)
	}

	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte(`{"prompt":"a","completion":"b"}`+"\n"+`{"instruction":"i","output":"o"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadDataset(bad); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "bad.jsonl:2") {
		t.Errorf("mixed: %v", err)
	}
	mixed := &datasets.Dataset{Name: "m", Samples: []datasets.Sample{
		{ID: "m:1", Text: `{"prompt":"a","completion":"b"}`}, {ID: "m:7", Text: `{"instruction":"i","output":"o"}`}}}
	if _, _, err := Records(mixed); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "m:7: a alpaca record in a prompt-completion file (format set by m:1)") {
		t.Errorf("mixed samples: %v", err)
	}
	if _, _, err := Records(&datasets.Dataset{Name: "e"}); !errors.Is(err, ErrFormat) {
		t.Errorf("empty: %v", err)
	}
}
