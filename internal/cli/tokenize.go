package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/model/tokenizer"
)

func init() { register(newTokenizeCmd) }

func newTokenizeCmd() *cobra.Command {
	var modelDir string
	var noSpecial, jsonl, decode bool
	cmd := &cobra.Command{
		Use:   "tokenize --model DIR [--no-special] [--jsonl] | --model DIR --decode",
		Short: "Print the token ids of text on stdin (or, with --decode, the text of ids) with the model's tokenizer",
		Long: `tokenize reads text on stdin and prints its token ids as one JSON array,
using the model folder's tokenizer.json (the byte tokenizer where there is
none). The text is taken as it is, a final newline included.

--jsonl: every input line is a JSON string, every output line the JSON array
of its ids. --no-special leaves out what the tokenizer's post-processor adds
(BOS and the like).

--decode: every input line is a JSON array of ids; every output line the JSON
string of their text (special tokens kept; bytes that are not valid UTF-8
shown as U+FFFD).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelDir == "" {
				return fmt.Errorf("tokenize: --model is required")
			}
			if decode && (noSpecial || jsonl) {
				return fmt.Errorf("tokenize: --decode takes neither --no-special nor --jsonl")
			}
			tok, err := tokenizer.LoadDir(modelDir)
			if err != nil {
				return err
			}
			in, out := bufio.NewReader(cmd.InOrStdin()), bufio.NewWriter(cmd.OutOrStdout())
			switch {
			case decode:
				err = tokenizeDecode(tok, in, out)
			case jsonl:
				err = tokenizeLines(tok, !noSpecial, in, out)
			default:
				var text []byte
				if text, err = io.ReadAll(in); err == nil {
					err = writeJSONLine(out, encodeText(tok, string(text), !noSpecial))
				}
			}
			if ferr := out.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "model folder (tokenizer.json, tokenizer_config.json, generation_config.json)")
	cmd.Flags().BoolVar(&noSpecial, "no-special", false, "leave out the special tokens the post-processor adds (BOS and the like)")
	cmd.Flags().BoolVar(&jsonl, "jsonl", false, "every input line is a JSON string, every output line its ids")
	cmd.Flags().BoolVar(&decode, "decode", false, "read JSON arrays of ids, one per line, and print one JSON string per line")
	return cmd
}

func encodeText(tok tokenizer.Tokenizer, s string, special bool) []int {
	ids := tok.Encode(s)
	if special {
		ids = tokenizer.EncodeSpecial(tok, s)
	}
	if ids == nil {
		ids = []int{}
	}
	return ids
}

// writeJSONLine writes v as one line of JSON, with <, > and & as they are.
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// eachLine calls f with every non-blank line of r (without its line end)
// and its 1-based number.
func eachLine(r *bufio.Reader, f func(line []byte, n int) error) error {
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if ferr := f(bytes.TrimRight(line, "\r\n"), n); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func tokenizeLines(tok tokenizer.Tokenizer, special bool, in *bufio.Reader, out io.Writer) error {
	return eachLine(in, func(line []byte, n int) error {
		var s string
		if err := json.Unmarshal(line, &s); err != nil {
			return fmt.Errorf("tokenize: stdin line %d: want a JSON string: %w", n, err)
		}
		return writeJSONLine(out, encodeText(tok, s, special))
	})
}

func tokenizeDecode(tok tokenizer.Tokenizer, in *bufio.Reader, out io.Writer) error {
	return eachLine(in, func(line []byte, n int) error {
		var ids []int
		if err := json.Unmarshal(line, &ids); err != nil {
			return fmt.Errorf("tokenize: stdin line %d: want a JSON array of ids: %w", n, err)
		}
		return writeJSONLine(out, tokenizer.ValidUTF8(tok.Decode(ids)))
	})
}
