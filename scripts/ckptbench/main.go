// Command ckptbench is make bench-checkpoints: what a trainer's step
// checkpoints cost on a full fine-tune, and what keeping only every k-th
// step's (trainer config checkpoint_every) saves. It trains the same
// round three times with the trainer's backend on the Host engine,
// interleaving the runs: with no checkpoints kept (the commitment still
// digests every step's state: the baseline), with every step's checkpoint
// kept, and with every k-th step's (and the last) kept. It prints, for
// each, the round's wall time and the bytes left on disk, then the ratios
// against the baseline and against every-step checkpoints, all measured
// in the same run:
//
//	none    time_ms T bytes 0
//	every-1 time_ms T bytes B
//	every-k time_ms T bytes B
//	every-1/none time R  every-k/none time R  every-k/every-1 time R bytes R
//
// The model is random, full fine-tuned, of -hidden width and -layers
// layers (default d 256, 4 layers, vocabulary 4096: about 5 M parameters,
// a 20 MB checkpoint a step); the data is the shipped English text.
package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

func main() {
	hidden := flag.Int("hidden", 256, "hidden size")
	layers := flag.Int("layers", 4, "decoder layers")
	vocab := flag.Int("vocab", 4096, "vocabulary")
	steps := flag.Int("steps", 16, "steps a round")
	every := flag.Int("every", 8, "keep every k-th step's checkpoint")
	reps := flag.Int("reps", 2, "rounds of each kind (interleaved)")
	data := flag.String("data", "datasets/testdata/english/train.txt", "training text")
	flag.Parse()
	if err := run(*hidden, *layers, *vocab, *steps, *every, *reps, *data); err != nil {
		fmt.Fprintln(os.Stderr, "ckptbench:", err)
		os.Exit(1)
	}
}

func run(hidden, layers, vocab, steps, every, reps int, dataPath string) error {
	tmp, err := os.MkdirTemp("", "ckptbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	c := model.DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = vocab, hidden, hidden*8/3, layers
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 8, 4, 256
	m, err := model.New(c, 1)
	if err != nil {
		return err
	}
	dir := filepath.Join(tmp, "base")
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		return err
	}
	ds, err := datasets.Load(dataPath, datasets.Options{})
	if err != nil {
		return err
	}
	be, err := trainer.NewBackend(trainer.DeviceHost)
	if err != nil {
		return err
	}
	kinds := []struct {
		name  string
		every int // -1: no checkpoints
	}{{"none", -1}, {"every-1", 1}, {fmt.Sprintf("every-%d", every), every}}
	// One untimed round first: page cache, allocator, CPU frequency.
	warm := filepath.Join(tmp, "warm")
	if err := os.MkdirAll(warm, 0o755); err != nil {
		return err
	}
	if _, err := be.Fit(context.Background(), trainer.Task{JobID: "bench", Round: 1, ModelDir: dir, OutDir: warm, Compression: "none",
		Train: model.TrainConfig{Steps: 2, Batch: 4, SeqLen: 64, LR: 1e-3, Schedule: model.ScheduleConstant, Seed: 1}}, trainer.Data{Dataset: ds}); err != nil {
		return err
	}
	times := make([]time.Duration, len(kinds))
	bytes := make([]int64, len(kinds))
	for r := range reps {
		for i, k := range kinds {
			var store *commitment.Store
			if k.every >= 0 {
				store = &commitment.Store{Dir: filepath.Join(tmp, fmt.Sprintf("ckpt-%d-%d", i, r)), Every: k.every}
			}
			out := filepath.Join(tmp, fmt.Sprintf("out-%d-%d", i, r))
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			t := trainer.Task{JobID: "bench", Round: 1, ModelDir: dir, OutDir: out, Compression: "none", Checkpoints: store,
				Train: model.TrainConfig{Steps: steps, Batch: 4, SeqLen: 64, LR: 1e-3, Schedule: model.ScheduleConstant, Seed: 1}}
			start := time.Now()
			if _, err := be.Fit(context.Background(), t, trainer.Data{Dataset: ds}); err != nil {
				return err
			}
			times[i] += time.Since(start)
			if store != nil {
				n, err := du(store.Dir)
				if err != nil {
					return err
				}
				bytes[i] = n
				if err := os.RemoveAll(store.Dir); err != nil {
					return err
				}
			}
			fmt.Fprintf(os.Stderr, "ckptbench: rep %d %s %s\n", r+1, k.name, times[i]/time.Duration(r+1))
		}
	}
	for i, k := range kinds {
		fmt.Printf("%s time_ms %.0f bytes %d\n", k.name, float64(times[i].Milliseconds())/float64(reps), bytes[i])
	}
	ratio := func(a, b int) float64 { return float64(times[a]) / float64(times[b]) }
	fmt.Printf("every-1/none time %.3f  %s/none time %.3f  %s/every-1 time %.3f bytes %.3f\n",
		ratio(1, 0), kinds[2].name, ratio(2, 0), kinds[2].name, ratio(2, 1), float64(bytes[2])/float64(max(bytes[1], 1)))
	return nil
}

// du sums the sizes of the regular files under dir.
func du(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}
