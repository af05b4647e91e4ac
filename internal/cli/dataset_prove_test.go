package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDatasetProveJSONLSample: a record of a JSONL dataset, copied into a
// .jsonl file, is the sample `dataset prove --sample` proves included, as
// `audit contains` takes the same file; --sample-format text takes the
// line as raw text instead, which is not a sample of the dataset.
func TestDatasetProveJSONLSample(t *testing.T) {
	data := filepath.Join("..", "..", "datasets", "testdata", "shards", "trainer-1.jsonl")
	raw, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := bytes.Cut(raw, []byte("\n"))
	sample := filepath.Join(t.TempDir(), "sample.jsonl")
	if err := os.WriteFile(sample, append(first, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	kind := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := RunWith(context.Background(), append([]string{"dataset", "prove", data, "--sample", sample}, args...), &out, &errb); err != nil {
			t.Fatalf("dataset prove %v: %v\n%s", args, err, errb.String())
		}
		var p struct {
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal(out.Bytes(), &p); err != nil {
			t.Fatalf("dataset prove printed %q: %v", out.String(), err)
		}
		return p.Kind
	}
	if k := kind(); k != "inclusion" {
		t.Errorf("a record of the dataset in a .jsonl file: %s proof, want inclusion", k)
	}
	if k := kind("--sample-format", "text"); k != "exclusion" {
		t.Errorf("the record's raw line as text: %s proof, want exclusion", k)
	}
	var out, errb bytes.Buffer
	err = RunWith(context.Background(), []string{"dataset", "prove", data, "--sample", data}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "give one sample per file") {
		t.Errorf("a .jsonl sample file of many records: %v", err)
	}
}
