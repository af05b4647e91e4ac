package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
)

func init() { register(newModelCmd) }

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Create, merge and fingerprint LLaMA-family model folders",
	}
	cmd.AddCommand(newModelInitCmd(), newModelMergeCmd(), newModelDigestCmd(), newModelImportCmd())
	return cmd
}

func newModelInitCmd() *cobra.Command {
	var cfgPath, out, dtype string
	var seed uint64
	cmd := &cobra.Command{
		Use:   "init --config FILE.yaml -o DIR",
		Short: "Write a randomly initialised model (config.json + model.safetensors)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" || out == "" {
				return fmt.Errorf("model init: --config and -o are required")
			}
			c, err := model.LoadConfigYAML(cfgPath)
			if err != nil {
				return err
			}
			m, err := model.New(c, seed)
			if err != nil {
				return err
			}
			digest, err := m.Save(out, safetensors.DType(dtype))
			if err != nil {
				return err
			}
			logger(cmd).Info("model initialised", "dir", out, "params", m.NumParams(), "seed", seed)
			fmt.Fprintln(cmd.OutOrStdout(), digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "model YAML (configs/models/*.yaml)")
	cmd.Flags().StringVarP(&out, "out", "o", "", "output folder")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "RNG seed for the initial weights")
	cmd.Flags().StringVar(&dtype, "dtype", "F32", "stored dtype: F32, F16 or BF16")
	return cmd
}

func newModelMergeCmd() *cobra.Command {
	var modelDir, adapterDir, out string
	cmd := &cobra.Command{
		Use:   "merge --model DIR --adapter DIR -o OUT",
		Short: "Fold a LoRA adapter into its base model (W += alpha/r · B·A)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" || adapterDir == "" || out == "" {
				return fmt.Errorf("model merge: --model, --adapter and -o are required")
			}
			m, err := loadModel(modelDir, adapterDir)
			if err != nil {
				return err
			}
			digest, err := m.Save(out, safetensors.F32)
			if err != nil {
				return err
			}
			if err := copyTokenizer(modelDir, out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "base model folder")
	cmd.Flags().StringVar(&adapterDir, "adapter", "", "PEFT LoRA adapter folder")
	cmd.Flags().StringVarP(&out, "out", "o", "", "output model folder")
	return cmd
}

func newModelDigestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "digest PATH",
		Short: "Print the weight digest of a .safetensors file, a model folder or an adapter folder",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := model.DigestPath(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), d)
			return nil
		},
	}
}

func newModelImportCmd() *cobra.Command {
	var out string
	var opt model.ImportOptions
	cmd := &cobra.Command{
		Use:   "import HF_DIR -o DIR",
		Short: "Import a Hugging Face model folder into fedtune's canonical form, keeping the source files' SHA-256",
		Long: `Reads a folder as transformers saves it (config.json; model.safetensors, or
shards listed by model.safetensors.index.json; F32, F16 or BF16; tokenizer
and generation_config files) and writes its canonical form to DIR, with
import.json recording the canonical weight digest beside the path, size and
SHA-256 of every source file read. DIR must not exist or be empty; a folder
that is refused leaves nothing behind. Prints the weight digest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("model import: -o is required")
			}
			if opt.Name == "" {
				opt.Name = filepath.Base(filepath.Clean(args[0]))
			}
			rec, err := model.Import(args[0], out, opt)
			if err != nil {
				return err
			}
			logger(cmd).Info("model imported", "from", args[0], "dir", out, "dtype", rec.DType, "sources", len(rec.Sources))
			fmt.Fprintln(cmd.OutOrStdout(), rec.Digest)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "output folder (new or empty)")
	cmd.Flags().StringVar(&opt.Name, "name", "", "model name recorded on registration (default: the folder's name)")
	cmd.Flags().StringVar(&opt.Licence, "licence", "", "licence recorded on registration (an SPDX identifier, e.g. Apache-2.0)")
	cmd.Flags().StringVar(&opt.Source, "source", "", "where the folder came from (e.g. a Hugging Face repository and revision)")
	return cmd
}

// loadModel loads a model folder, its BF16 matrices held as bfloat16
// (model.LoadBF16: the engine reads them without a float32 copy), and, if
// adapterDir is set, merges the adapter into float32 copies of the
// projections it adapts only (model.MergeShared): the base weights are not
// held twice.
func loadModel(modelDir, adapterDir string) (*model.Model, error) {
	m, err := model.LoadBF16(modelDir)
	if err != nil {
		return nil, err
	}
	if adapterDir == "" {
		return m, nil
	}
	ad, err := model.LoadAdapter(adapterDir, m.Config)
	if err != nil {
		return nil, err
	}
	return m.MergeShared(ad)
}

// copyTokenizer copies the model's tokenizer.json, if any, so that an
// output model folder is self-contained.
func copyTokenizer(fromDir, toDir string) error {
	src := filepath.Join(fromDir, tokenizer.FileName)
	data, err := os.ReadFile(src)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = safetensors.WriteFileFunc(filepath.Join(toDir, tokenizer.FileName), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
	return err
}
