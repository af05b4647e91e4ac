package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := RunWith(context.Background(), args, &out, &errb)
	if err != nil {
		t.Logf("fedtune %s: %v\nstderr: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("fedtune %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func fileSHA(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestModelInitDigest: init writes a canonical file whose sha256 is the
// digest it prints, and the same seed gives the same weights.
func TestModelInitDigest(t *testing.T) {
	dir := t.TempDir()
	var ds []string
	for _, sub := range []string{"a", "b"} {
		out := filepath.Join(dir, sub)
		d := strings.TrimSpace(mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "9", "-o", out))
		if want := fileSHA(t, filepath.Join(out, "model.safetensors")); d != want {
			t.Fatalf("init printed %s, sha256 of model.safetensors is %s", d, want)
		}
		if got := strings.TrimSpace(mustCLI(t, "model", "digest", filepath.Join(out, "model.safetensors"))); got != d {
			t.Errorf("model digest FILE = %s, want %s", got, d)
		}
		ds = append(ds, d)
	}
	if ds[0] != ds[1] {
		t.Error("one seed gave two different models")
	}
}

// TestNoRaceModelCommands drives init, train (LoRA and --full), eval,
// generate, merge and digest through the command line on the tiny model.
func TestNoRaceModelCommands(t *testing.T) {
	fedtest.SkipUnderRace(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	english := "../../datasets/testdata/english/train.txt"

	digest := strings.TrimSpace(mustCLI(t, "model", "init", "--config", "../../configs/models/tiny.yaml", "--seed", "3", "-o", base))
	if want := fileSHA(t, filepath.Join(base, "model.safetensors")); digest != want {
		t.Fatalf("init printed %s, sha256 of model.safetensors is %s", digest, want)
	}
	if d := strings.TrimSpace(mustCLI(t, "model", "digest", base)); d != digest {
		t.Errorf("model digest = %s, want %s", d, digest)
	}

	adapter := filepath.Join(dir, "adapter")
	adDigest := strings.TrimSpace(mustCLI(t, "train", "--model", base, "--data", english, "-o", adapter,
		"--steps", "3", "--batch", "2", "--seq-len", "16", "--lora-rank", "4", "--lora-targets", "q_proj,v_proj,down_proj", "--seed", "1"))
	if want := fileSHA(t, filepath.Join(adapter, "adapter_model.safetensors")); adDigest != want {
		t.Errorf("train printed %s, adapter file sha256 %s", adDigest, want)
	}
	if d := strings.TrimSpace(mustCLI(t, "model", "digest", adapter)); d != adDigest {
		t.Errorf("adapter digest = %s, want %s", d, adDigest)
	}
	if d := fileSHA(t, filepath.Join(base, "model.safetensors")); d != digest {
		t.Error("LoRA training changed the base model file")
	}
	// The Gorgonia reference trains the same run to nearly the same
	// adapter (the default device is the engine's Host).
	gorgonia := filepath.Join(dir, "adapter-gorgonia")
	gDigest := strings.TrimSpace(mustCLI(t, "train", "--model", base, "--data", english, "-o", gorgonia, "--device", "gorgonia",
		"--steps", "3", "--batch", "2", "--seq-len", "16", "--lora-rank", "4", "--lora-targets", "q_proj,v_proj,down_proj", "--seed", "1"))
	if want := fileSHA(t, filepath.Join(gorgonia, "adapter_model.safetensors")); gDigest != want {
		t.Errorf("train --device gorgonia printed %s, adapter file sha256 %s", gDigest, want)
	}

	line := regexp.MustCompile(`^\{"tokens": \d+, "mean_nll": [0-9.e+-]+, "perplexity": [0-9.e+-]+\}\n$`)
	evalJSON := func(args ...string) map[string]float64 {
		out := mustCLI(t, append([]string{"eval", "--json", "--data", english}, args...)...)
		if !line.MatchString(out) {
			t.Fatalf("eval --json printed %q", out)
		}
		var r map[string]float64
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r0 := evalJSON("--model", base)
	r1 := evalJSON("--model", base, "--adapter", adapter)
	if r0["tokens"] < 1000 || r0["tokens"] != r1["tokens"] {
		t.Errorf("token counts %v, %v", r0["tokens"], r1["tokens"])
	}
	if r0["mean_nll"] == r1["mean_nll"] {
		t.Error("the adapter did not change the score")
	}

	merged := filepath.Join(dir, "merged")
	mustCLI(t, "model", "merge", "--model", base, "--adapter", adapter, "-o", merged)
	if r2 := evalJSON("--model", merged); r2["mean_nll"] != r1["mean_nll"] {
		t.Errorf("merged model scores %v, base+adapter %v", r2["mean_nll"], r1["mean_nll"])
	}

	full := filepath.Join(dir, "full")
	mustCLI(t, "train", "--model", base, "--data", english, "-o", full, "--full", "--steps", "2", "--batch", "2", "--seq-len", "16")
	if d := strings.TrimSpace(mustCLI(t, "model", "digest", full)); d == digest {
		t.Error("full fine-tuning left the weights unchanged")
	}

	g1 := mustCLI(t, "generate", "--model", base, "--adapter", adapter, "--prompt", "The ", "--max-tokens", "12", "--temperature", "0")
	g2 := mustCLI(t, "generate", "--model", merged, "--prompt", "The ", "--max-tokens", "12", "--temperature", "0")
	if g1 != g2 {
		t.Errorf("greedy generation differs: %q vs %q", g1, g2)
	}
	s1 := mustCLI(t, "generate", "--model", base, "--prompt", "a", "--max-tokens", "20", "--temperature", "1", "--top-p", "0.9", "--seed", "4")
	s2 := mustCLI(t, "generate", "--model", base, "--prompt", "a", "--max-tokens", "20", "--temperature", "1", "--top-p", "0.9", "--seed", "4")
	if s1 != s2 {
		t.Errorf("seeded sampling is not repeatable: %q vs %q", s1, s2)
	}
}

func TestModelCommandErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("model_type: llama\nvocab_size: 256\nhiden_size: 64\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"model", "init", "--config", bad, "-o", filepath.Join(dir, "m")}, `bad.yaml:3: unknown key "hiden_size"`},
		{[]string{"model", "init", "-o", filepath.Join(dir, "m")}, "--config"},
		{[]string{"model", "init", "--config", "../../configs/models/tiny.yaml", "--dtype", "F8", "-o", filepath.Join(dir, "m")}, "dtype F8"},
		{[]string{"model", "digest", filepath.Join(dir, "nothing")}, "nothing"},
		{[]string{"eval", "--model", dir, "--data", bad}, "config.json"},
		{[]string{"train", "--model", dir}, "required"},
		{[]string{"train", "--model", dir, "--data", bad, "-o", filepath.Join(dir, "a"), "--device", "tpu"}, `--device: unknown device "tpu"`},
		{[]string{"generate", "--model", filepath.Join(dir, "none"), "--prompt", "x"}, "none"},
	}
	for _, tc := range cases {
		_, err := runCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fedtune %s: error %v, want one mentioning %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "m")); err == nil {
		t.Error("a failed init left an output folder")
	}
}

// TestModelImport: import reads a transformers-style folder (BF16, two
// shards and an index) and prints the canonical digest, which is the
// output file's sha256; the output trains like any model folder would load.
func TestModelImport(t *testing.T) {
	c := modeltest.TinyConfig()
	m, err := model.New(c, 4)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "hf")
	modeltest.WriteHFCheckpoint(t, src, m, modeltest.HFCheckpoint{DType: safetensors.BF16, Shards: 2})
	out := filepath.Join(t.TempDir(), "imported")
	d := strings.TrimSpace(mustCLI(t, "model", "import", src, "-o", out, "--licence", "Apache-2.0"))
	if want := fileSHA(t, filepath.Join(out, "model.safetensors")); d != want {
		t.Fatalf("import printed %s, sha256 of model.safetensors is %s", d, want)
	}
	rec, err := model.ReadImportRecord(out)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Name != "hf" || rec.Licence != "Apache-2.0" || len(rec.Sources) != 6 {
		t.Errorf("record %+v", rec)
	}
	if _, err := runCLI(t, "model", "import", src, "-o", out); err == nil {
		t.Error("import over a non-empty folder accepted")
	}
}

// TestNoRaceBF16Base: a BF16 checkpoint, whose frozen matrices train,
// eval and generate load as bfloat16 (model.LoadBF16), gives exactly what
// an F32 checkpoint of the same values gives: the same LoRA adapter bytes
// (engine and Gorgonia), the same eval line and the same generation.
func TestNoRaceBF16Base(t *testing.T) {
	fedtest.SkipUnderRace(t)
	dir := t.TempDir()
	bf, f32 := filepath.Join(dir, "bf16"), filepath.Join(dir, "f32")
	english := "../../datasets/testdata/english/train.txt"
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "5", "--dtype", "BF16", "-o", bf)
	m, err := model.Load(bf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Save(f32, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	if held, _ := model.LoadBF16(bf); held.Tensors[model.EmbedName].BF16 == nil {
		t.Fatal("LoadBF16 did not hold the BF16 checkpoint's embedding as bfloat16")
	}
	var ads, outs [2]string
	for i, base := range []string{bf, f32} {
		ad := filepath.Join(dir, "ad", filepath.Base(base))
		ads[i] = strings.TrimSpace(mustCLI(t, "train", "--model", base, "--data", english, "-o", ad,
			"--steps", "2", "--batch", "2", "--seq-len", "16", "--lora-rank", "4", "--lora-dropout", "0.1",
			"--lora-targets", "q_proj,v_proj,up_proj,down_proj", "--seed", "2"))
		g := strings.TrimSpace(mustCLI(t, "train", "--model", base, "--data", english, "-o", ad+"-g", "--device", "gorgonia",
			"--steps", "1", "--batch", "2", "--seq-len", "16", "--lora-rank", "4", "--seed", "2"))
		outs[i] = g + "\n" +
			mustCLI(t, "eval", "--json", "--data", english, "--model", base, "--adapter", ad) +
			mustCLI(t, "eval", "--json", "--data", english, "--model", base) +
			mustCLI(t, "generate", "--model", base, "--adapter", ad, "--prompt", "The ", "--max-tokens", "10", "--temperature", "0")
	}
	if ads[0] != ads[1] {
		t.Errorf("LoRA adapter %s from the BF16 checkpoint, %s from F32", ads[0], ads[1])
	}
	if outs[0] != outs[1] {
		t.Errorf("from the BF16 checkpoint:\n%s\nfrom F32:\n%s", outs[0], outs[1])
	}
}
