package cli

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/datasets/instruct"
	"github.com/fedtune/fedtune/eval"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/tokenizer"
)

func init() { register(newInstructCmd) }

func newInstructCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "instruct",
		Short: "Instruction data (messages, Alpaca, prompt/completion JSONL) rendered with a model's chat template",
	}
	cmd.AddCommand(newInstructRenderCmd())
	return cmd
}

// renderedRecord is one output line of fedtune instruct render.
type renderedRecord struct {
	ID   string  `json:"id"`
	Text string  `json:"text"`
	IDs  []int   `json:"ids"`
	Mask []uint8 `json:"mask"`
}

func newInstructRenderCmd() *cobra.Command {
	var modelDir string
	cmd := &cobra.Command{
		Use:   "render --model DIR FILE.jsonl",
		Short: "Print every record as the trainer sees it: rendered text, token ids and loss mask",
		Long: `Reads an instruction file (the format is detected: {"messages": …}, Alpaca
{"instruction", "input", "output"} or {"prompt", "completion"}), renders each
record with the chat template of the model folder's tokenizer_config.json (or
as plain text when it has none), tokenizes it with the folder's tokenizer
without adding special tokens, and prints one JSON object a line:
{"id", "text", "ids", "mask"}; mask is 1 on the assistant tokens the loss
trains. A summary goes to stderr.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := eval.InstructRenderer(modelDir, chat.Options{})
			if err != nil {
				return fmt.Errorf("instruct render: %w", err)
			}
			tok, err := tokenizer.Load(modelDir, math.MaxInt32)
			if err != nil {
				return fmt.Errorf("instruct render: %w", err)
			}
			recs, format, err := instruct.Read(args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetEscapeHTML(false)
			var tokens, trained int
			for _, rec := range recs {
				text, _, err := r.Render(rec.Messages)
				if err != nil {
					return fmt.Errorf("instruct render: %s: %w", rec.ID, err)
				}
				ex, err := instruct.Encode(rec, r, tok)
				if err != nil {
					return fmt.Errorf("instruct render: %w", err)
				}
				tokens += len(ex.Tokens)
				for _, m := range ex.Mask {
					trained += int(m)
				}
				if err := enc.Encode(renderedRecord{ID: ex.ID, Text: text, IDs: ex.Tokens, Mask: ex.Mask}); err != nil {
					return err
				}
			}
			how := "chat template"
			if _, plain := r.(instruct.Plain); plain {
				how = "plain text (no chat template)"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d %s records, %d tokens, %d assistant tokens; rendered as %s\n",
				args[0], len(recs), format, tokens, trained, how)
			return nil
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "model folder (tokenizer.json, tokenizer_config.json); none: plain text, byte tokenizer")
	return cmd
}
