package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The model-folder files besides tokenizer.json that name the BOS and EOS
// tokens.
const (
	ConfigFileName           = "tokenizer_config.json"
	GenerationConfigFileName = "generation_config.json"
)

// Open reads the tokenizer.json of the model folder dir, and the BOS and EOS
// tokens from its tokenizer_config.json (bos_token, eos_token) and
// generation_config.json (bos_token_id, eos_token_id; these win), when
// present.
func Open(dir string) (*BPE, error) {
	p := filepath.Join(dir, FileName)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := DecodeBPE(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", p, err)
	}
	if err := t.readConfigs(dir); err != nil {
		return nil, err
	}
	return t, nil
}

// tokenJSON is a token named in tokenizer_config.json: a string or an
// object with its content.
type tokenJSON struct{ content *string }

func (x *tokenJSON) UnmarshalJSON(b []byte) error {
	var s *string
	if json.Unmarshal(b, &s) == nil {
		x.content = s
		return nil
	}
	var o struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	x.content = o.Content
	return nil
}

// idsJSON is an id or a list of ids (generation_config.json's
// eos_token_id).
type idsJSON []int

func (x *idsJSON) UnmarshalJSON(b []byte) error {
	var one *int
	if json.Unmarshal(b, &one) == nil {
		*x = nil
		if one != nil {
			*x = idsJSON{*one}
		}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*x = many
	return nil
}

func (t *BPE) readConfigs(dir string) error {
	read := func(name string, v any) error {
		p := filepath.Join(dir, name)
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("tokenizer: %w", err)
		}
		if err := json.Unmarshal(data, v); err != nil {
			return fmt.Errorf("tokenizer: %s: %w", p, err)
		}
		return nil
	}
	var tc struct {
		BOS tokenJSON `json:"bos_token"`
		EOS tokenJSON `json:"eos_token"`
	}
	if err := read(ConfigFileName, &tc); err != nil {
		return err
	}
	if tc.BOS.content != nil {
		id, ok := t.tokenID(*tc.BOS.content)
		if !ok {
			return fmt.Errorf("tokenizer: %s: bos_token %q is not a token", ConfigFileName, *tc.BOS.content)
		}
		t.bos = id
	}
	if tc.EOS.content != nil {
		id, ok := t.tokenID(*tc.EOS.content)
		if !ok {
			return fmt.Errorf("tokenizer: %s: eos_token %q is not a token", ConfigFileName, *tc.EOS.content)
		}
		t.eos = []int{id}
	}
	var gc struct {
		BOS idsJSON `json:"bos_token_id"`
		EOS idsJSON `json:"eos_token_id"`
	}
	if err := read(GenerationConfigFileName, &gc); err != nil {
		return err
	}
	for _, id := range append(append([]int{}, gc.BOS...), gc.EOS...) {
		if id < 0 || id >= t.size {
			return fmt.Errorf("tokenizer: %s: token id %d outside the vocabulary of %d", GenerationConfigFileName, id, t.size)
		}
	}
	if len(gc.BOS) > 0 {
		t.bos = gc.BOS[0]
	}
	if len(gc.EOS) > 0 {
		t.eos = gc.EOS
	}
	return nil
}

// tokenID returns the id of an added token's content or a vocabulary token.
func (t *BPE) tokenID(s string) (int, bool) {
	for _, a := range t.added {
		if a.content == s {
			return a.id, true
		}
	}
	id, ok := t.vocab[s]
	return id, ok
}
