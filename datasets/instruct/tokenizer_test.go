package instruct

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/fedtune/fedtune/model/tokenizer"
)

// TestWithBPE renders with the SmolLM2 (ChatML) template and tokenizes with
// model/tokenizer's byte-level BPE, given ChatML's added tokens.
func TestWithBPE(t *testing.T) {
	data, err := os.ReadFile("../../model/tokenizer/testdata/gpt2style/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	added := file["added_tokens"].([]any)
	next := 0
	for _, a := range added {
		next = max(next, int(a.(map[string]any)["id"].(float64))+1)
	}
	for i, s := range []string{"<|im_start|>", "<|im_end|>"} {
		added = append(added, map[string]any{"id": next + i, "content": s, "special": true,
			"single_word": false, "lstrip": false, "rstrip": false, "normalized": false})
	}
	file["added_tokens"] = added
	data, err = json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	bpe, err := tokenizer.DecodeBPE(data)
	if err != nil {
		t.Fatal(err)
	}
	r := loadTemplate(t, "smollm2")
	ex, err := Encode(Record{ID: "b:1", Messages: multiTurn}, r, bpe)
	if err != nil {
		t.Fatal(err)
	}
	full, _, _ := r.Render(multiTurn)
	if bpe.Decode(ex.Tokens) != full {
		t.Errorf("decode %q != rendering %q", bpe.Decode(ex.Tokens), full)
	}
	if got, want := masked(ex, bpe.Decode), []string{"5<|im_end|>\n", "20<|im_end|>\n"}; !reflect.DeepEqual(got, want) {
		t.Errorf("masked %q, want %q", got, want)
	}
	n := 0
	for _, id := range ex.Tokens {
		if id == next || id == next+1 {
			n++
		}
	}
	if n != 2*len(multiTurn) {
		t.Errorf("%d ChatML special tokens, want %d", n, 2*len(multiTurn))
	}
	// The byte tokenizer needs no files and fits any rendering.
	byteTok, err := tokenizer.NewByte(256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Encode(Record{ID: "b:2", Messages: multiTurn}, Plain{}, byteTok); err != nil {
		t.Fatal(err)
	}
}
