package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestProgressPlainLines: off a terminal, progress is whole lines (no
// carriage returns), at most one per interval, and always one at the end.
func TestProgressPlainLines(t *testing.T) {
	for _, tc := range []struct {
		name  string
		every time.Duration
		sets  int
		lines int
	}{
		{"throttled", time.Hour, 50, 2}, // the first update and the final state
		{"every update", 0, 5, 5},       // the last update already shows the final state
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := newProgress(&buf, "train", tc.sets)
			if p.bar != nil {
				t.Fatal("a bytes.Buffer was taken for a terminal")
			}
			p.every = tc.every
			for i := 1; i <= tc.sets; i++ {
				p.Set(i, "loss 1.0000  10 tok/s")
			}
			p.Finish()
			out := buf.String()
			if strings.Contains(out, "\r") {
				t.Errorf("carriage return in non-terminal progress: %q", out)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != tc.lines {
				t.Errorf("%d lines, want %d: %q", len(lines), tc.lines, out)
			}
			want := regexp.MustCompile(`^train \d+/\d+ \(\d+%\)  loss 1\.0000  10 tok/s  elapsed \d+s$`)
			for _, l := range lines {
				if !want.MatchString(l) {
					t.Errorf("progress line %q", l)
				}
			}
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "train 50/50 (100%)") && !strings.HasPrefix(last, "train 5/5 (100%)") {
				t.Errorf("last line %q does not show the final count", last)
			}
		})
	}
}

// TestTrainEvalProgressInLogs runs train and eval with stderr captured (not
// a terminal): their progress must be plain newline-terminated lines.
func TestTrainEvalProgressInLogs(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "1", "-o", base)
	var out, errb bytes.Buffer
	data := "../../datasets/testdata/english/eval.txt"
	if err := RunWith(t.Context(), []string{"train", "--model", base, "--data", data, "-o", filepath.Join(dir, "ad"),
		"--steps", "2", "--batch", "1", "--seq-len", "8"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if err := RunWith(t.Context(), []string{"eval", "--model", base, "--data", data}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	s := errb.String()
	if strings.Contains(s, "\r") {
		t.Errorf("carriage returns in captured stderr: %q", s)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^train 2/2 \(100%\)  loss \d+\.\d{4}  \d+ tok/s  elapsed \d+s$`),
		regexp.MustCompile(`(?m)^eval tokens (\d+)/(\d+) \(100%\)  elapsed \d+s$`),
	} {
		if !want.MatchString(s) {
			t.Errorf("stderr has no line matching %s:\n%s", want, s)
		}
	}
}

// TestGenerateWarnsWhenContextFull: asking for more tokens than the context
// holds generates up to the context and says so on stderr.
func TestGenerateWarnsWhenContextFull(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "1", "-o", base)
	for _, tc := range []struct {
		max  string
		warn bool
	}{{"500", true}, {"5", false}} {
		var out, errb bytes.Buffer
		if err := RunWith(t.Context(), []string{"generate", "--model", base, "--prompt", "hi", "--max-tokens", tc.max, "--temperature", "0"}, &out, &errb); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(errb.String(), "context full"); got != tc.warn {
			t.Errorf("--max-tokens %s: warning %v, want %v; stderr %q", tc.max, got, tc.warn, errb.String())
		}
	}
}

// TestTrainContinueKeepsAdapterAlpha: continuing an adapter with --adapter
// keeps its lora_alpha (its scaling) and dropout unless the flags are given.
func TestTrainContinueKeepsAdapterAlpha(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	data := "../../datasets/testdata/english/eval.txt"
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "1", "-o", base)
	common := []string{"--model", base, "--data", data, "--steps", "1", "--batch", "1", "--seq-len", "8"}
	mustCLI(t, append([]string{"train", "-o", filepath.Join(dir, "a1"), "--lora-rank", "4", "--lora-alpha", "32", "--lora-dropout", "0.1"}, common...)...)
	mustCLI(t, append([]string{"train", "-o", filepath.Join(dir, "a2"), "--adapter", filepath.Join(dir, "a1")}, common...)...)
	mustCLI(t, append([]string{"train", "-o", filepath.Join(dir, "a3"), "--adapter", filepath.Join(dir, "a1"), "--lora-alpha", "8"}, common...)...)
	for sub, want := range map[string][2]float64{"a2": {32, 0.1}, "a3": {8, 0.1}} {
		b, err := os.ReadFile(filepath.Join(dir, sub, "adapter_config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var pc struct {
			R       int     `json:"r"`
			Alpha   float64 `json:"lora_alpha"`
			Dropout float64 `json:"lora_dropout"`
		}
		if err := json.Unmarshal(b, &pc); err != nil {
			t.Fatal(err)
		}
		if pc.R != 4 || pc.Alpha != want[0] || pc.Dropout != want[1] {
			t.Errorf("%s: r=%d lora_alpha=%g lora_dropout=%g, want r=4 alpha=%g dropout=%g", sub, pc.R, pc.Alpha, pc.Dropout, want[0], want[1])
		}
	}
}
