package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/model/safetensors"
)

func aggWrite(t *testing.T, path string, vals []float32, meta map[string]string) string {
	t.Helper()
	a, err := safetensors.FromFloat32("lora_A", safetensors.F32, []int{2, 2}, vals[:4])
	if err != nil {
		t.Fatal(err)
	}
	b, err := safetensors.FromFloat32("lora_B", safetensors.BF16, []int{2}, vals[4:6])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := safetensors.WriteFile(path, []safetensors.Tensor{a, b}, meta); err != nil {
		t.Fatal(err)
	}
	return path
}

func aggRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = RunWith(context.Background(), append([]string{"aggregate"}, args...), &o, &e)
	return o.String(), e.String(), err
}

func aggInputs(t *testing.T) (dir string, in []string) {
	dir = t.TempDir()
	vals := [][]float32{{1, 2, 3, 4, 1, 2}, {5, 6, 7, 8, 3, 4}, {0, 0, 0, 0, 2, 2}, {1, 1, 1, 1, 1, 1}, {2, 2, 2, 2, 2, 2}}
	for i, v := range vals {
		in = append(in, aggWrite(t, filepath.Join(dir, "u"+string(rune('a'+i))+".safetensors"), v, map[string]string{"num_samples": "10"}))
	}
	return dir, in
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestAggregateFedAvgCommand(t *testing.T) {
	_, in := aggInputs(t)
	out := filepath.Join(t.TempDir(), "global.safetensors")
	stdout, _, err := aggRun(t, "--strategy", "fedavg", "-o", out, in[0]+"@30", in[1]+"@10")
	if err != nil {
		t.Fatal(err)
	}
	want := fileDigest(t, out) + "  " + out + "\n"
	if stdout != want {
		t.Fatalf("stdout %q, want %q", stdout, want)
	}
	f, err := safetensors.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, _ := f.Float32s("lora_A")
	if a[0] != 2 || a[3] != 5 {
		t.Fatalf("lora_A = %v, want [2 3 4 5]", a)
	}
	if d, _ := f.Digest(); d != fileDigest(t, out) {
		t.Fatalf("output is not canonical: digest %s, sha256 %s", d, fileDigest(t, out))
	}
	// Listing the inputs in another order, with more threads, gives the same bytes.
	out2 := filepath.Join(t.TempDir(), "global.safetensors")
	stdout2, _, err := aggRun(t, "-o", out2, "--threads", "3", in[1]+"@10", in[0]+"@30")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Fields(stdout2)[0] != strings.Fields(stdout)[0] {
		t.Fatalf("digest changed with input order: %s vs %s", stdout2, stdout)
	}
}

func TestAggregateStrategiesCommand(t *testing.T) {
	_, in := aggInputs(t)
	for _, args := range [][]string{
		{"--strategy", "median"},
		{"--strategy", "trimmed-mean", "--trim", "0.2"},
		{"--strategy", "krum", "--byzantine", "1"},
		{"--strategy", "multi-krum", "--byzantine", "1", "--keep", "2"},
		{"--strategy", "bulyan", "--byzantine", "0"},
	} {
		out := filepath.Join(t.TempDir(), "g.safetensors")
		stdout, _, err := aggRun(t, append(append(args, "-o", out), in...)...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.HasPrefix(stdout, fileDigest(t, out)) {
			t.Fatalf("%v: stdout %q", args, stdout)
		}
	}
}

func TestAggregateFedAdamWithState(t *testing.T) {
	dir, in := aggInputs(t)
	base := aggWrite(t, filepath.Join(dir, "base.safetensors"), []float32{0, 0, 0, 0, 0, 0}, nil)
	outDir := t.TempDir()
	g1, s1 := filepath.Join(outDir, "g1.safetensors"), filepath.Join(outDir, "s1.safetensors")
	if _, _, err := aggRun(t, "--strategy", "fedadam", "--base", base, "-o", g1, in[0], in[1]); err == nil || !strings.Contains(err.Error(), "--state-out") {
		t.Fatalf("fedadam without --state-out: err = %v", err)
	}
	stdout, _, err := aggRun(t, "--strategy", "fedadam", "--eta", "0.5", "--base", base, "-o", g1, "--state-out", s1, in[0], in[1])
	if err != nil {
		t.Fatal(err)
	}
	if want := fileDigest(t, g1) + "  " + g1 + "\n" + fileDigest(t, s1) + "  " + s1 + "\n"; stdout != want {
		t.Fatalf("stdout %q, want %q", stdout, want)
	}
	g2, s2 := filepath.Join(outDir, "g2.safetensors"), filepath.Join(outDir, "s2.safetensors")
	if _, _, err := aggRun(t, "--strategy", "fedadam", "--eta", "0.5", "--base", g1, "--state", s1, "-o", g2, "--state-out", s2, in[2], in[3]); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(s2)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.Info("v/lora_B"); !ok {
		t.Fatalf("state has no v/lora_B: %v", f.Tensors())
	}
}

func TestAggregateBadInputWritesNothing(t *testing.T) {
	dir, in := aggInputs(t)
	bad := aggWrite(t, filepath.Join(dir, "bad.safetensors"), []float32{1, float32(math.NaN()), 3, 4, 5, 6}, nil)
	outDir := t.TempDir()
	out := filepath.Join(outDir, "g.safetensors")
	_, _, err := aggRun(t, "-o", out, in[0], bad, in[1])
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `"lora_A"`) || !strings.Contains(err.Error(), "NaN") {
		t.Fatalf("err = %v, want one naming %s and tensor lora_A", err, bad)
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
		t.Fatalf("output directory not empty: %v", ents)
	}
	// --skip-invalid reports it and aggregates the rest.
	stdout, stderr, err := aggRun(t, "--skip-invalid", "-o", out, in[0], bad, in[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "rejected: "+bad) || !strings.HasPrefix(stdout, fileDigest(t, out)) {
		t.Fatalf("stdout %q stderr %q", stdout, stderr)
	}
}

func TestAggregateCommandErrors(t *testing.T) {
	dir, in := aggInputs(t)
	trunc := filepath.Join(dir, "trunc.safetensors")
	b, _ := os.ReadFile(in[0])
	os.WriteFile(trunc, b[:len(b)-3], 0o644)
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"no output", []string{in[0]}, "-o OUT is required"},
		{"unknown strategy", []string{"--strategy", "fedsgd", "-o", "X", in[0]}, `unknown strategy "fedsgd"`},
		{"flag for another strategy", []string{"--strategy", "krum", "--trim", "0.1", "-o", "X", in[0]}, "--trim applies to trimmed-mean"},
		{"too many byzantine", []string{"--strategy", "krum", "--byzantine", "2", "-o", "X", in[0], in[1], in[2], in[3], in[4]}, "needs more than 2f+2 = 6 inputs, got 5"},
		{"bulyan too many byzantine", []string{"--strategy", "bulyan", "--byzantine", "1", "-o", "X", in[0], in[1], in[2], in[3], in[4]}, "4f+3 = 7"},
		{"listed twice", []string{"-o", "X", in[0], in[1], in[0] + "@3"}, "listed twice"},
		{"bad count", []string{"-o", "X", in[0] + "@-2"}, "must be a positive number"},
		{"noise without clip", []string{"--noise-multiplier", "1", "-o", "X", in[0]}, "--clip"},
		{"seed without noise", []string{"--seed", "3", "-o", "X", in[0]}, "--noise-multiplier"},
		{"truncated", []string{"-o", "X", in[0], trunc}, "truncated"},
		{"missing file", []string{"-o", "X", in[0], filepath.Join(dir, "nope.safetensors")}, "nope.safetensors"},
		{"state for fedavg", []string{"--state", in[1], "-o", "X", in[0]}, "keeps no server state"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			outDir := t.TempDir()
			args := append([]string(nil), tc.args...)
			for i := range args {
				if args[i] == "X" {
					args[i] = filepath.Join(outDir, "g.safetensors")
				}
			}
			_, _, err := aggRun(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.msg)
			}
			if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
				t.Fatalf("output directory not empty: %v", ents)
			}
		})
	}
}

func TestParseAggregateInput(t *testing.T) {
	cases := []struct {
		arg     string
		path    string
		weight  float64
		wantErr bool
	}{
		{"a.safetensors", "a.safetensors", 0, false},
		{"a.safetensors@12", "a.safetensors", 12, false},
		{"dir@x/a.safetensors", "dir@x/a.safetensors", 0, false},
		{"a@b@2.5", "a@b", 2.5, false},
		{"a.safetensors@0", "", 0, true},
		{"a.safetensors@NaN", "", 0, true},
		{"@4", "", 0, true},
	}
	for _, tc := range cases {
		in, err := parseAggregateInput(tc.arg)
		if (err != nil) != tc.wantErr || (!tc.wantErr && (in != aggregator.Input{Path: tc.path, Weight: tc.weight})) {
			t.Errorf("parseAggregateInput(%q) = %+v, %v", tc.arg, in, err)
		}
	}
}

// fedtune aggregate --strategy diloco takes DiLoCo's outer step from
// --base, its momentum buffer kept with --state / --state-out; an absurd
// outer learning rate is refused before anything is written.
func TestAggregateDiLoCoWithState(t *testing.T) {
	dir, in := aggInputs(t)
	base := aggWrite(t, filepath.Join(dir, "base.safetensors"), []float32{0, 0, 0, 0, 0, 0}, nil)
	outDir := t.TempDir()
	g1, s1 := filepath.Join(outDir, "g1.safetensors"), filepath.Join(outDir, "s1.safetensors")
	if _, _, err := aggRun(t, "--strategy", "diloco", "--outer-lr", "700", "--base", base, "-o", g1, "--state-out", s1, in[0], in[1]); err == nil ||
		!strings.Contains(err.Error(), "diloco learning_rate 700 must be in (0, 10]") {
		t.Fatalf("outer lr 700: err = %v", err)
	}
	assertNoFile(t, g1)
	stdout, _, err := aggRun(t, "--strategy", "diloco", "--outer-lr", "0.5", "--outer-momentum", "0.8", "--base", base, "-o", g1, "--state-out", s1, in[0], in[1])
	if err != nil {
		t.Fatal(err)
	}
	if want := fileDigest(t, g1) + "  " + g1 + "\n" + fileDigest(t, s1) + "  " + s1 + "\n"; stdout != want {
		t.Fatalf("stdout %q, want %q", stdout, want)
	}
	g2, s2 := filepath.Join(outDir, "g2.safetensors"), filepath.Join(outDir, "s2.safetensors")
	if _, _, err := aggRun(t, "--strategy", "diloco", "--outer-lr", "0.5", "--outer-momentum", "0.8", "--base", g1, "--state", s1, "-o", g2, "--state-out", s2, in[2], in[3]); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(s2)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.Info("momentum/lora_B"); !ok {
		t.Fatalf("state has no momentum/lora_B: %v", f.Tensors())
	}
}

func assertNoFile(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Stat(p); err == nil {
		t.Fatalf("%s was written", p)
	}
}
