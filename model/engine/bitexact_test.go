package engine_test

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/engine"
)

var update = flag.Bool("update", false, "rewrite testdata/train_digests.golden")

// trainDigests trains a LoRA task and a full fine-tune on the Host as the
// instruction set stands and returns one line per task: the bits of each
// step's loss, the digest of the trained state (adapter or weights) and
// the Merkle root over the state digests after each step.
// The shapes take every path: rows and widths that are not multiples of 8
// (scalar tails), products with more than one block of k (300 tokens
// against gemmKC = 256), edge tiles, and packed weights.
func trainDigests(t *testing.T) string {
	t.Helper()
	c := benchBaseConfig() // d=64, intermediate 172, vocab 256, 2 layers
	c.VocabSize = 250
	m, err := model.New(c, 11)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, task := range []struct {
		name string
		lora *model.LoRAConfig
	}{
		{"lora", &model.LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.1, Targets: []string{"q_proj", "v_proj", "gate_proj", "down_proj"}}},
		{"full", nil},
	} {
		cfg := model.TrainConfig{LoRA: task.lora, Steps: 3, Batch: 5, SeqLen: 60, LR: 1e-3, ClipNorm: 1, Seed: 5}
		tr := newTrainer(t, m, nil, cfg)
		// The per-step commitments a trainer makes (model/commitment):
		// a replay on another instruction set must give the same root.
		rec := &commitment.Recorder{Stepper: tr, State: func() (map[string]*model.Tensor, error) {
			if task.lora != nil {
				return tr.Adapter().Tensors, nil
			}
			return tr.Model().Tensors, nil
		}}
		fmt.Fprintf(&out, "%s", task.name)
		for s := 0; s < cfg.Steps; s++ {
			loss, err := rec.Step(batchOf(cfg.Batch, cfg.SeqLen, c.VocabSize, uint64(s)))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&out, " loss%d=%016x", s+1, math.Float64bits(loss))
		}
		var d string
		if task.lora != nil {
			d, err = tr.Adapter().Digest()
		} else {
			d, err = tr.Model().Digest()
		}
		if err != nil {
			t.Fatal(err)
		}
		_, root, err := rec.Root()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, " state=%s steps=%s\n", d, root)
	}
	return out.String()
}

// TestTrainingBitExact trains the same LoRA task and full fine-tune on
// every instruction set this CPU and build offer (AVX-512, AVX2, the
// pure-Go loops), switched in process, and requires each to give the
// digests of testdata/train_digests.golden bit for bit. make
// test-bitexact runs it again in the purego build, with
// FEDTUNE_ENGINE_ISA=avx2 (the switch a user has) and with GOAMD64=v3
// (where Go may fuse a·b+c), each against the same golden file, so every
// path is checked against every other. Refresh the file with -update
// only when a change to the arithmetic is meant to change the bits.
func TestTrainingBitExact(t *testing.T) {
	golden := filepath.Join("testdata", "train_digests.golden")
	want, err := os.ReadFile(golden)
	if err != nil && !*update {
		t.Fatalf("%v (run go test -run TestTrainingBitExact -update to create it)", err)
	}
	env := os.Getenv(engine.ISAEnv)
	t.Logf("%s=%q; this build offers at most %s; in use: %s", engine.ISAEnv, env, engine.BestISA(), engine.ISA())
	if env != "" {
		// The user's switch: the whole run stays on what it picked.
		if got := trainDigests(t); got != string(want) {
			t.Fatalf("%s=%s: digests differ from %s:\ngot:\n%swant:\n%s", engine.ISAEnv, env, golden, got, want)
		}
		return
	}
	defer func() { _ = engine.UseISA("") }()
	for _, isa := range []string{"avx512", "avx2", "generic"} {
		t.Run(isa, func(t *testing.T) {
			if err := engine.UseISA(isa); err != nil {
				t.Skipf("%s leg skipped: %v", isa, err)
			}
			if isa == "generic" && fedtest.RaceEnabled && engine.BestISA() != "generic" {
				t.Skip("generic leg skipped under -race (slow there): make test-bitexact and the purego pass run it")
			}
			got := trainDigests(t)
			if *update && isa == engine.BestISA() {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				want = []byte(got)
				return
			}
			if got != string(want) {
				t.Fatalf("%s: digests differ from %s:\ngot:\n%swant:\n%s", isa, golden, got, want)
			}
		})
	}
}
