package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/eval"
	"github.com/fedtune/fedtune/model"
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
windows of max_position_embeddings tokens; a window of n tokens predicts n-1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" || data == "" {
				return fmt.Errorf("eval: --model and --data are required")
			}
			m, err := loadModel(modelDir, adapterDir)
			if err != nil {
				return err
			}
			var bar *progress
			res, err := eval.File(cmd.Context(), m, modelDir, data, func(done, total int) {
				if asJSON {
					return
				}
				if bar == nil {
					bar = newProgress(cmd.ErrOrStderr(), "eval tokens", total)
				}
				bar.Set(done, "")
			})
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
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
