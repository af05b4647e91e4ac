package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
	"github.com/fedtune/fedtune/trainer"
)

func init() { register(newEvalCmd) }

func newEvalCmd() *cobra.Command {
	var modelDir, adapterDir, data string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "eval --model DIR [--adapter DIR] --data FILE",
		Short: "Mean negative log-likelihood (nats/token) and perplexity of a model on a file",
		Long: `The file's tokens are one stream (a plain text file as it is; JSONL or a
folder as the training loader joins its samples), cut into non-overlapping
windows of max_position_embeddings tokens; a window of n tokens predicts n-1.
Instruction data (JSONL of {"messages"}, Alpaca or {"prompt", "completion"}
records) is rendered with the model's chat template and scored on the
assistant tokens only, each record on its own.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" || data == "" {
				return fmt.Errorf("eval: --model and --data are required")
			}
			m, err := loadModel(modelDir, adapterDir)
			if err != nil {
				return err
			}
			tok, err := tokenizer.Load(modelDir, m.Config.VocabSize)
			if err != nil {
				return err
			}
			var bar *progress
			report := func(what string) func(done, total int) {
				return func(done, total int) {
					if asJSON {
						return
					}
					if bar == nil {
						bar = newProgress(cmd.ErrOrStderr(), what, total)
					}
					bar.Set(done, "")
				}
			}
			var res model.EvalResult
			if ds, ok := trainer.ReadInstruct(data); ok {
				var exs []instruct.Example
				if exs, err = trainer.InstructExamples(ds, modelDir, tok); err != nil {
					return fmt.Errorf("eval %s: %w", data, err)
				}
				docs, masks := instructDocs(exs)
				res, err = engine.EvaluateMasked(cmd.Context(), engine.NewHost(), m, docs, masks, report("eval records"))
			} else {
				var tokens []int
				if tokens, err = evalTokens(data, tok); err != nil {
					return err
				}
				res, err = engine.Evaluate(cmd.Context(), engine.NewHost(), m, tokens, report("eval tokens"))
			}
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return fmt.Errorf("eval %s: %w", data, err)
			}
			if asJSON {
				fmt.Fprintln(cmd.OutOrStdout(), evalJSON(res))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tokens %d  mean_nll %.6f  perplexity %.4f\n", res.Tokens, res.MeanNLL, res.Perplexity)
			return nil
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "model folder")
	cmd.Flags().StringVar(&adapterDir, "adapter", "", "LoRA adapter folder to apply")
	cmd.Flags().StringVar(&data, "data", "", "text file (or JSONL / folder)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print one line {"tokens": N, "mean_nll": X, "perplexity": P}`)
	return cmd
}

// evalJSON formats res as the one line {"tokens": N, "mean_nll": X,
// "perplexity": P} (shortest round-tripping floats).
func evalJSON(res model.EvalResult) string {
	f := func(x float64) string {
		b, err := json.Marshal(x)
		if err != nil { // ±Inf or NaN: not JSON numbers
			return "null"
		}
		return string(b)
	}
	return fmt.Sprintf(`{"tokens": %d, "mean_nll": %s, "perplexity": %s}`, res.Tokens, f(res.MeanNLL), f(res.Perplexity))
}

// evalTokens tokenizes a plain file as one stream, or a JSONL file or
// folder through the dataset loader.
func evalTokens(path string, tok tokenizer.Tokenizer) ([]int, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	low := strings.ToLower(path)
	if st.IsDir() || strings.HasSuffix(low, ".jsonl") || strings.HasSuffix(low, ".ndjson") {
		ds, err := datasets.Load(path, datasets.Options{})
		if err != nil {
			return nil, err
		}
		return datasets.Tokenize(ds, tok), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return tok.Encode(string(b)), nil
}

// instructDocs splits encoded instruction records into token ids and loss
// masks.
func instructDocs(exs []instruct.Example) (docs [][]int, masks [][]uint8) {
	for _, ex := range exs {
		docs = append(docs, ex.Tokens)
		masks = append(masks, ex.Mask)
	}
	return docs, masks
}
