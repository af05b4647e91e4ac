package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

func init() { register(newGenerateCmd) }

func newGenerateCmd() *cobra.Command {
	var modelDir, adapterDir, prompt string
	var maxTokens int
	var temp, topP float64
	var seed uint64
	cmd := &cobra.Command{
		Use:   "generate --model DIR [--adapter DIR] --prompt TEXT",
		Short: "Continue a prompt (temperature 0 = greedy; else top-p sampling, seeded)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" {
				return fmt.Errorf("generate: --model is required")
			}
			m, err := loadModel(modelDir, adapterDir)
			if err != nil {
				return err
			}
			tok, err := tokenizer.Load(modelDir, m.Config.VocabSize)
			if err != nil {
				return err
			}
			ids := tok.Encode(prompt)
			if m.Config.BOSTokenID != nil {
				ids = append([]int{*m.Config.BOSTokenID}, ids...)
			}
			out, err := engine.Generate(cmd.Context(), engine.NewHost(), m, ids, model.GenerateConfig{
				MaxTokens: maxTokens, Temperature: temp, TopP: topP, Seed: seed, Stop: m.Config.EOSTokenID})
			if err != nil {
				return err
			}
			if len(out) < maxTokens && len(ids)+len(out) > m.Config.MaxPositionEmbeddings {
				logger(cmd).Warn("context full: generation stopped early", "generated", len(out), "max_tokens", maxTokens,
					"prompt_tokens", len(ids), "max_position_embeddings", m.Config.MaxPositionEmbeddings)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok.Decode(out))
			return nil
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "model folder")
	cmd.Flags().StringVar(&adapterDir, "adapter", "", "LoRA adapter folder to apply")
	cmd.Flags().StringVar(&prompt, "prompt", "", "text to continue")
	cmd.Flags().IntVar(&maxTokens, "max-tokens", 64, "new tokens at most")
	cmd.Flags().Float64Var(&temp, "temperature", 0.8, "sampling temperature (0 = greedy)")
	cmd.Flags().Float64Var(&topP, "top-p", 0.95, "nucleus sampling threshold")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "sampling seed")
	return cmd
}
