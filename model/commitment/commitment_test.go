package commitment_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
)

var update = flag.Bool("update", false, "rewrite testdata/inputs.golden and testdata/inputs_file.golden")

// naiveRoot is RFC 6962's MTH, written out.
func naiveRoot(leaves [][]byte) []byte {
	if len(leaves) == 1 {
		h := sha256.Sum256(append([]byte{0}, leaves[0]...))
		return h[:]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	h := sha256.Sum256(append(append([]byte{1}, naiveRoot(leaves[:k])...), naiveRoot(leaves[k:])...))
	return h[:]
}

func stepDigests(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = digest.Bytes([]byte(fmt.Sprintf("state after step %d", i+1)))
	}
	return out
}

// TestStepRoot: the root is RFC 6962's over the raw digests, every step's
// proof verifies, and a changed digest, step or root does not.
func TestStepRoot(t *testing.T) {
	for n := 1; n <= 13; n++ {
		ds := stepDigests(n)
		var raw [][]byte
		for _, d := range ds {
			b, _ := hex.DecodeString(d)
			raw = append(raw, b)
		}
		root, err := commitment.StepRoot(ds)
		if err != nil {
			t.Fatal(err)
		}
		if want := hex.EncodeToString(naiveRoot(raw)); root != want {
			t.Fatalf("n=%d: root %s, RFC 6962 %s", n, root, want)
		}
		for s := 1; s <= n; s++ {
			p, err := commitment.StepProof(ds, s)
			if err != nil {
				t.Fatal(err)
			}
			if err := commitment.VerifyStep(root, uint64(n), uint64(s), ds[s-1], p); err != nil {
				t.Fatalf("n=%d step %d: %v", n, s, err)
			}
			other := digest.Bytes([]byte("forged"))
			if err := commitment.VerifyStep(root, uint64(n), uint64(s), other, p); err == nil {
				t.Fatalf("n=%d step %d: a forged digest verified", n, s)
			}
			if n > 1 {
				if err := commitment.VerifyStep(root, uint64(n), uint64(s%n+1), ds[s-1], p); err == nil {
					t.Fatalf("n=%d step %d: verified as step %d", n, s, s%n+1)
				}
			}
		}
	}
	for _, bad := range [][]string{nil, {"abc"}, {strings.ToUpper(stepDigests(1)[0])}} {
		if _, err := commitment.StepRoot(bad); !errors.Is(err, commitment.ErrInvalid) {
			t.Errorf("StepRoot(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func goodInputs() commitment.Inputs {
	cfg := model.TrainConfig{LoRA: &model.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}}, Steps: 2, Batch: 2, SeqLen: 8, LR: 1e-3, Seed: 7}
	return commitment.Inputs{BaseModel: digest.Bytes([]byte("base")), Hyperparams: commitment.HyperparamsOf(cfg),
		Batches: [][]string{{"s-3", "s-1"}, {"s-2", "s-0"}}}
}

// TestInputsDigest pins the encoding (testdata/inputs.golden: a task
// without a starting optimizer state, then one with), shows that every
// input moves the digest, and that malformed inputs are refused with what
// is wrong.
func TestInputsDigest(t *testing.T) {
	in := goodInputs()
	d, err := in.Digest()
	if err != nil {
		t.Fatal(err)
	}
	withOpt := goodInputs()
	withOpt.OptState = digest.Bytes([]byte("adamw"))
	dOpt, err := withOpt.Digest()
	if err != nil {
		t.Fatal(err)
	}
	got := d + "\n" + dOpt + "\n"
	path := filepath.Join("testdata", "inputs.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Fatalf("inputs digests\n%sgolden\n%s: the encoding changed", got, want)
	}
	for name, mut := range map[string]func(*commitment.Inputs){
		"base":        func(in *commitment.Inputs) { in.BaseModel = digest.Bytes([]byte("other")) },
		"adapter":     func(in *commitment.Inputs) { in.Adapter = digest.Bytes([]byte("ad")) },
		"seed":        func(in *commitment.Inputs) { in.Hyperparams.Seed++ },
		"lr":          func(in *commitment.Inputs) { in.Hyperparams.LR *= 2 },
		"rank":        func(in *commitment.Inputs) { l := *in.Hyperparams.LoRA; l.Rank = 8; in.Hyperparams.LoRA = &l },
		"batch order": func(in *commitment.Inputs) { in.Batches = [][]string{{"s-1", "s-3"}, {"s-2", "s-0"}} },
		"step order":  func(in *commitment.Inputs) { in.Batches = [][]string{{"s-2", "s-0"}, {"s-3", "s-1"}} },
		"opt state":   func(in *commitment.Inputs) { in.OptState = digest.Bytes([]byte("adamw")) },
	} {
		c := goodInputs()
		mut(&c)
		if d2, err := c.Digest(); err != nil || d2 == d {
			t.Errorf("%s changed: digest %s, %v", name, d2, err)
		}
	}
	for name, c := range map[string]struct {
		mut  func(*commitment.Inputs)
		want string
	}{
		"no base":       {func(in *commitment.Inputs) { in.BaseModel = "" }, "base_model"},
		"bad adapter":   {func(in *commitment.Inputs) { in.Adapter = "xyz" }, "adapter"},
		"bad opt state": {func(in *commitment.Inputs) { in.OptState = "xyz" }, "opt_state"},
		"batches short": {func(in *commitment.Inputs) { in.Batches = in.Batches[:1] }, "batches: 1 listed for 2 steps"},
		"empty batch":   {func(in *commitment.Inputs) { in.Batches[1] = nil }, "batches[1] is empty"},
		"no steps":      {func(in *commitment.Inputs) { in.Hyperparams.Steps = 0; in.Batches = nil }, "hyperparams.steps: 0"},
	} {
		in := goodInputs()
		c.mut(&in)
		if _, err := in.Digest(); !errors.Is(err, commitment.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid saying %q", name, err, c.want)
		}
	}
}

type batches struct{ n, B, T, V int }

func (b *batches) Next() [][]int {
	b.n++
	r := modeltest.RNG(uint64(b.n), "batch")
	out := make([][]int, b.B)
	for i := range out {
		out[i] = make([]int, b.T+1)
		for j := range out[i] {
			out[i][j] = r.IntN(b.V)
		}
	}
	return out
}

// TestRecorder trains a real LoRA task on the Host through a Recorder
// with a Store: one digest per step, the last the adapter's own digest,
// each checkpoint file hashing to its digest, a replay giving the same
// root, and the store pruned to its newest Keep rounds.
func TestRecorder(t *testing.T) {
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 64, 32, 72, 1
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 2, 1, 64
	m, err := model.New(c, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := model.TrainConfig{LoRA: &model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj"}}, Steps: 3, Batch: 2, SeqLen: 12, LR: 1e-2, Seed: 3}
	store := &commitment.Store{Dir: t.TempDir(), Keep: 2}
	var roots []string
	for round := uint64(1); round <= 3; round++ {
		tr, err := engine.NewTrainer(engine.NewHost(), m, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rec := &commitment.Recorder{Stepper: tr, State: func() (map[string]*model.Tensor, error) { return tr.Adapter().Tensors, nil },
			Store: store, Job: "job-1", Round: round}
		if _, err := commitment.RunSteps(context.Background(), rec, cfg.Steps, &batches{B: 2, T: 12, V: 64}); err != nil {
			t.Fatal(err)
		}
		ds := rec.Digests()
		if len(ds) != cfg.Steps || ds[0] == ds[1] {
			t.Fatalf("round %d: digests %v", round, ds)
		}
		if want, _ := tr.Adapter().Digest(); ds[len(ds)-1] != want {
			t.Fatalf("last step digest %s, adapter digest %s", ds[len(ds)-1], want)
		}
		for s, d := range ds {
			b, err := store.Load("job-1", round, s+1)
			if err != nil {
				t.Fatal(err)
			}
			if got := digest.Bytes(b); got != d {
				t.Fatalf("checkpoint of step %d hashes to %s, recorded %s", s+1, got, d)
			}
		}
		n, root, err := rec.Root()
		if err != nil || n != uint64(cfg.Steps) {
			t.Fatalf("root: %d %s %v", n, root, err)
		}
		roots = append(roots, root)
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if roots[0] != roots[1] || roots[1] != roots[2] {
		t.Fatalf("the same task gave different step roots: %v", roots)
	}
	if _, err := store.Load("job-1", 1, 1); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("round 1 kept beyond Keep=2: %v", err)
	}
	for _, job := range []string{"../x", "", "a/b", ".."} {
		if _, err := store.Path(job, 1, 1); !errors.Is(err, commitment.ErrInvalid) {
			t.Errorf("job %q: %v, want ErrInvalid", job, err)
		}
	}
}

// TestInputsFileGolden pins the disclosed inputs file (InputsFile) a
// trainer writes: the JSON whose domain-prefixed SHA-256 is the inputs
// digest (testdata/inputs_file.golden; -update rewrites it).
func TestInputsFileGolden(t *testing.T) {
	s := &commitment.Store{Dir: t.TempDir()}
	in := goodInputs()
	if err := s.SaveInputs("job", 1, in); err != nil {
		t.Fatal(err)
	}
	p, err := s.Path("job", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(filepath.Dir(p), commitment.InputsFile))
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "inputs_file.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("inputs file\n%s\nwant\n%s", got, want)
	}
	d, _ := in.Digest()
	if digest.Bytes(append([]byte("fedtune/training-inputs/v1\n"), got...)) != d {
		t.Fatal("the inputs file is not the preimage of the inputs digest")
	}
}
