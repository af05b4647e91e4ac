package inference_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// viaJSON is s as a JSON string carries it (each invalid byte U+FFFD).
func viaJSON(t *testing.T, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestStreamTextMatchesWhole: through the server, on the byte tokenizer and
// the byte-level BPE of model/tokenizer's testdata, a sampled answer's
// streamed pieces join to the non-streamed answer's text, and both are
// the text of the tokens model.Generate samples for the same request
// (multi-byte characters in the prompt, and a random model's answers
// split characters over tokens).
func TestStreamTextMatchesWhole(t *testing.T) {
	bpe, err := tokenizer.LoadDir(filepath.Join("..", "model", "tokenizer", "testdata", "gpt2style"))
	if err != nil {
		t.Fatal(err)
	}
	byteTok, err := tokenizer.NewByte(260)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, tok := range map[string]tokenizer.Tokenizer{"byte": byteTok, "gpt2style": bpe} {
		t.Run(name, func(t *testing.T) {
			c := modeltest.TinyConfig()
			c.VocabSize = tok.VocabSize()
			c.MaxPositionEmbeddings = 96
			c.EOSTokenID = model.TokenIDs{c.VocabSize - 1}
			base, err := model.New(c, 5)
			if err != nil {
				t.Fatal(err)
			}
			modeltest.Randomise(base, 5)
			m, err := inference.NewModel(base, tok, modelID, engine.NewHost(), 4)
			if err != nil {
				t.Fatal(err)
			}
			m.StopTokens = nil
			f := serve(t, m, inference.Config{})
			const prompt = "héllo 日本 👍🏽 "
			for seed := range int64(4) {
				p := openai.CompletionNewParams{Model: modelID, Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
					MaxTokens: openai.Int(40), Temperature: openai.Float(1), Seed: openai.Int(seed)}
				whole, err := f.client.Completions.New(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				st := f.client.Completions.NewStreaming(ctx, p)
				var pieces []string
				for st.Next() {
					if ch := st.Current(); len(ch.Choices) > 0 && ch.Choices[0].Text != "" {
						pieces = append(pieces, ch.Choices[0].Text)
					}
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
				ids, err := engine.Generate(ctx, engine.NewHost(), base, tok.Encode(prompt),
					model.GenerateConfig{MaxTokens: 40, Temperature: 1, Seed: uint64(seed)})
				if err != nil {
					t.Fatal(err)
				}
				want := viaJSON(t, tok.Decode(ids))
				if got := strings.Join(pieces, ""); got != whole.Choices[0].Text || got != want {
					t.Errorf("seed %d: streamed %q (%d pieces), whole %q, Decode of the tokens %q", seed, got, len(pieces), whole.Choices[0].Text, want)
				}
			}
		})
	}
}
