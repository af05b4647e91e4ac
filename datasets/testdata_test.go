package datasets

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/datasets/internal/gen"
)

var update = flag.Bool("update", false, "rewrite the generated files in testdata/")

// TestShippedTasksAreGenerated checks that testdata/tasks and
// testdata/shards are exactly what internal/gen produces ("go generate" or
// -update rewrites them).
func TestShippedTasksAreGenerated(t *testing.T) {
	for name, want := range gen.Files() {
		p := filepath.Join("testdata", filepath.FromSlash(name))
		if *update {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from internal/gen's output; run go generate ./datasets", p)
		}
	}
}

func mustLoad(t *testing.T, p string) *Dataset {
	t.Helper()
	d, err := Load(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestShippedTasks(t *testing.T) {
	train := mustLoad(t, "testdata/tasks/train.jsonl")
	eval := mustLoad(t, "testdata/tasks/eval.jsonl")
	if len(train.Samples) != gen.TrainRecords || len(eval.Samples) != gen.EvalRecords {
		t.Fatalf("tasks: %d train, %d eval", len(train.Samples), len(eval.Samples))
	}
	prompts := map[string]bool{}
	for _, s := range train.Samples {
		q, _, _ := strings.Cut(s.Text, "\n")
		prompts[q] = true
	}
	for _, s := range append(append([]Sample{}, train.Samples...), eval.Samples...) {
		if err := checkAnswer(s.Text); err != nil {
			t.Fatalf("%s: %v", s.ID, err)
		}
	}
	for _, s := range eval.Samples {
		q, _, _ := strings.Cut(s.Text, "\n")
		if prompts[q] {
			t.Errorf("eval prompt %q is also in train", q)
		}
	}
	if train.Samples[0].ID != "train.jsonl:1" {
		t.Errorf("first ID %q", train.Samples[0].ID)
	}
}

// checkAnswer recomputes a task record's answer independently of
// internal/gen.
func checkAnswer(text string) error {
	q, a, ok := strings.Cut(text, "\nA: ")
	if !ok || !strings.HasPrefix(q, "Q: ") {
		return fmt.Errorf("%q is not a Q/A pair", text)
	}
	q = strings.TrimPrefix(q, "Q: ")
	var want string
	switch op, arg, _ := strings.Cut(q, " "); op {
	case "reverse":
		r := []rune(arg)
		slices.Reverse(r)
		want = string(r)
	case "upper":
		want = strings.ToUpper(arg)
	case "repeat":
		want = arg + " " + arg
	default:
		var x, y int
		if _, err := fmt.Sscanf(q, "%d+%d=", &x, &y); err != nil {
			return fmt.Errorf("unknown task %q", q)
		}
		want = strconv.Itoa(x + y)
	}
	if a != want {
		return fmt.Errorf("%q: answer %q, want %q", q, a, want)
	}
	return nil
}

func TestShippedShards(t *testing.T) {
	seen := map[string]string{}
	for _, s := range mustLoad(t, "testdata/tasks/train.jsonl").Samples {
		seen[s.Text] = s.ID
	}
	for _, s := range mustLoad(t, "testdata/tasks/eval.jsonl").Samples {
		seen[s.Text] = s.ID
	}
	for k, canary := range gen.Canaries {
		name := "trainer-" + string(rune('1'+k)) + ".jsonl"
		d := mustLoad(t, filepath.Join("testdata/shards", name))
		if len(d.Samples) != gen.ShardRecords+1 {
			t.Errorf("%s: %d samples", name, len(d.Samples))
		}
		n := 0
		for i, s := range d.Samples {
			if !strings.Contains(s.Text, "CANARY-") {
				if err := checkAnswer(s.Text); err != nil {
					t.Fatalf("%s: %v", s.ID, err)
				}
			}
			if other, dup := seen[s.Text]; dup {
				t.Errorf("%s: %q also in %s", s.ID, s.Text, other)
			}
			seen[s.Text] = s.ID
			for j, c := range gen.Canaries {
				if strings.Contains(s.Text, c) {
					if j != k || i+1 != gen.CanaryLine {
						t.Errorf("%s holds canary %d", s.ID, j+1)
					}
					n++
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: canary %s found %d times", name, canary, n)
		}
	}
	readme, err := os.ReadFile("testdata/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range gen.Canaries {
		if !bytes.Contains(readme, []byte(c)) {
			t.Errorf("testdata/README.md does not list %s", c)
		}
	}
}

func TestShippedEnglish(t *testing.T) {
	train := mustLoad(t, "testdata/english/train.txt")
	eval := mustLoad(t, "testdata/english/eval.txt")
	size := 0
	for _, s := range train.Samples {
		size += len(s.Text) + 1
	}
	if size < 60_000 || len(train.Samples) < 100 {
		t.Errorf("english train: %d paragraphs, %d bytes; want >= 100 and >= 60 KB", len(train.Samples), size)
	}
	if len(eval.Samples) < 10 {
		t.Errorf("english eval: %d paragraphs", len(eval.Samples))
	}
	in := map[string]bool{}
	for _, s := range train.Samples {
		in[s.Text] = true
	}
	for _, s := range eval.Samples {
		if in[s.Text] {
			t.Errorf("eval paragraph %s is also in train", s.ID)
		}
	}
	// Splits of a shipped set are deterministic and disjoint.
	a1, b1 := train.Split(0.1, 1)
	a2, b2 := train.Split(0.1, 1)
	if !reflect.DeepEqual(a1, a2) || !reflect.DeepEqual(b1, b2) {
		t.Error("split not deterministic")
	}
	if len(a1.Samples)+len(b1.Samples) != len(train.Samples) || len(b1.Samples) == 0 {
		t.Errorf("split %d + %d of %d", len(a1.Samples), len(b1.Samples), len(train.Samples))
	}
}
