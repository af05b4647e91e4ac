package cli

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
	"github.com/fedtune/fedtune/trainer"
)

func init() { register(newTrainCmd) }

func newTrainCmd() *cobra.Command {
	var (
		modelDir, data, out, targets, schedule, adapterDir string
		device                                             string
		rank, steps, batch, seqLen, warmup                 int
		alpha, dropout, lr, wd, clip                       float64
		full                                               bool
		seed                                               uint64
	)
	cmd := &cobra.Command{
		Use:   "train --model DIR --data PATH -o OUT",
		Short: "Fine-tune a model on local data (LoRA by default, or --full)",
		Long: `Fine-tune (or, from a freshly initialised model, pre-train) on a text
file, a folder of .txt files or a JSONL file. Instruction data (JSONL of
{"messages"}, Alpaca or {"prompt", "completion"} records) is rendered with the
model's chat template, packed into windows whose documents do not attend to
each other, and trained with the loss on the assistant tokens only. With LoRA (the default) OUT is a
PEFT adapter folder and the base weights are untouched; with --full OUT is a
model folder. Runs are seeded: the same inputs and seed give the same weights.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" || data == "" || out == "" {
				return fmt.Errorf("train: --model, --data and -o are required")
			}
			if err := trainer.ValidateDevice(device); err != nil {
				return fmt.Errorf("train: --device: %w", err)
			}
			log := logger(cmd)
			// LoRA leaves the base frozen: its BF16 matrices stay bfloat16
			// (the engine reads them so, with the same results).
			load := model.LoadBF16
			if full {
				load = model.Load
			}
			m, err := load(modelDir)
			if err != nil {
				return err
			}
			tok, err := tokenizer.Load(modelDir, m.Config.VocabSize)
			if err != nil {
				return err
			}
			// Instruction data (messages, Alpaca, prompt/completion JSONL)
			// is rendered with the model's chat template and packed; the
			// loss is on the assistant tokens only.
			var (
				windows [][]int
				packed  []instruct.Window
				tokens  int
			)
			ds, isInstruct := trainer.ReadInstruct(data)
			if isInstruct {
				if packed, _, err = trainer.InstructWindows(ds, modelDir, tok, seqLen); err != nil {
					return fmt.Errorf("train: %s: %w", data, err)
				}
				if len(packed) == 0 {
					return fmt.Errorf("train: %s packs into no window with an answer token", data)
				}
				for _, w := range packed {
					for _, s := range w.Segments {
						if s != 0 {
							tokens++
						}
					}
				}
			} else {
				if ds, err = datasets.Load(data, datasets.Options{}); err != nil {
					return err
				}
				toks := datasets.Tokenize(ds, tok)
				tokens = len(toks)
				windows = datasets.Windows(toks, seqLen)
				if len(windows) == 0 {
					return fmt.Errorf("train: %s has %d tokens, fewer than seq_len+1 = %d", data, len(toks), seqLen+1)
				}
			}
			tc := model.TrainConfig{Steps: steps, Batch: batch, SeqLen: seqLen, LR: lr, WeightDecay: wd,
				ClipNorm: clip, Warmup: warmup, Schedule: schedule, Seed: seed}
			if !full {
				tc.LoRA = &model.LoRAConfig{Rank: rank, Alpha: alpha, Dropout: dropout, Targets: splitList(targets)}
			}
			var bar *progress
			tc.Progress = func(step int, loss, tps float64) {
				bar.Set(step, fmt.Sprintf("loss %.4f  %.0f tok/s", loss, tps))
			}
			var startAdapter *model.Adapter
			if adapterDir != "" {
				if full {
					return fmt.Errorf("train: --adapter continues a LoRA adapter; it cannot be used with --full")
				}
				if startAdapter, err = model.LoadAdapter(adapterDir, m.Config); err != nil {
					return err
				}
				if !cmd.Flags().Changed("lora-rank") {
					tc.LoRA.Rank = startAdapter.Config.Rank
				}
				if !cmd.Flags().Changed("lora-targets") {
					tc.LoRA.Targets = startAdapter.Config.Targets
				}
				// Alpha sets the adapter's scaling: keep the adapter's own
				// unless asked, or continuing would change what it computes.
				if !cmd.Flags().Changed("lora-alpha") {
					tc.LoRA.Alpha = startAdapter.Config.Alpha
				}
				if !cmd.Flags().Changed("lora-dropout") {
					tc.LoRA.Dropout = startAdapter.Config.Dropout
				}
			}
			log.Info("training", "samples", len(ds.Samples), "tokens", tokens, "windows", len(windows)+len(packed), "instruct", isInstruct,
				"mode", map[bool]string{true: "full", false: "lora"}[full], "steps", steps, "device", cmp.Or(device, trainer.DeviceCPU))
			start := time.Now()
			bar = newProgress(cmd.ErrOrStderr(), "train", steps)
			var tr trainer.Trained
			if isInstruct {
				tr, err = trainer.TrainBatches(cmd.Context(), device, m, startAdapter, tc, trainer.NewInstructBatches(packed, batch, seed))
			} else {
				tr, err = trainer.Train(cmd.Context(), device, m, startAdapter, tc, datasets.NewBatcher(windows, batch, seed))
			}
			bar.Finish()
			if err != nil {
				return err
			}
			loss := tr.Loss
			var digest string
			if full {
				digest, err = tr.Model.Save(out, safetensors.F32)
				if err == nil {
					err = copyTokenizer(modelDir, out)
				}
			} else {
				ad := tr.Adapter
				ad.BaseModel = modelDir
				digest, err = ad.Save(out)
			}
			if err != nil {
				return err
			}
			el := time.Since(start)
			log.Info("trained", "out", out, "final_loss", loss, "seconds", el.Seconds(),
				"tok_per_s", float64(tr.Tokens)/el.Seconds())
			fmt.Fprintln(cmd.OutOrStdout(), digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model folder (config.json + model.safetensors)")
	f.StringVar(&data, "data", "", "training data: text file, folder of .txt, or JSONL")
	f.StringVarP(&out, "out", "o", "", "output folder (adapter, or model with --full)")
	f.StringVar(&adapterDir, "adapter", "", "continue training this LoRA adapter folder (e.g. the round's global adapter)")
	f.BoolVar(&full, "full", false, "train every weight instead of a LoRA adapter")
	f.IntVar(&rank, "lora-rank", 8, "LoRA rank r")
	f.Float64Var(&alpha, "lora-alpha", 16, "LoRA alpha (scaling = alpha/r)")
	f.Float64Var(&dropout, "lora-dropout", 0, "LoRA dropout on the adapter input")
	f.StringVar(&targets, "lora-targets", strings.Join(model.DefaultTargets, ","), "comma-separated projections to adapt")
	f.IntVar(&steps, "steps", 100, "optimiser steps")
	f.IntVar(&batch, "batch", 8, "windows per step")
	f.IntVar(&seqLen, "seq-len", 64, "tokens per window")
	f.IntVar(&warmup, "warmup", 0, "warmup steps (cosine schedule)")
	f.Float64Var(&lr, "lr", 1e-3, "peak learning rate")
	f.Float64Var(&wd, "weight-decay", 0, "AdamW decoupled weight decay")
	f.Float64Var(&clip, "clip-norm", 1, "global gradient-norm clip (0 = off)")
	f.StringVar(&schedule, "schedule", model.ScheduleCosine, "learning-rate schedule: cosine or constant")
	f.Uint64Var(&seed, "seed", 0, "seed for adapter init, dropout and batch order")
	f.StringVar(&device, "device", "", deviceUsage)
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
