package instruct

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/model/chat"
)

// fakeTok encodes the special strings as single ids (1000+) and every other
// byte as its value, like a tokenizer with added tokens.
type fakeTok struct{ specials []string }

func (f fakeTok) Encode(s string) []int {
	var ids []int
outer:
	for len(s) > 0 {
		for i, sp := range f.specials {
			if strings.HasPrefix(s, sp) {
				ids = append(ids, 1000+i)
				s = s[len(sp):]
				continue outer
			}
		}
		ids = append(ids, int(s[0]))
		s = s[1:]
	}
	return ids
}

func (f fakeTok) Decode(ids []int) string {
	var b strings.Builder
	for _, id := range ids {
		if id >= 1000 {
			b.WriteString(f.specials[id-1000])
		} else {
			b.WriteByte(byte(id))
		}
	}
	return b.String()
}

var tok = fakeTok{specials: []string{
	"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
	"<|im_start|>", "<|im_end|>", "<s>", "</s>", "[INST]", "[/INST]",
}}

// masked returns the text of each run of masked tokens.
func masked(ex Example, decode func([]int) string) []string {
	var runs []string
	for k := 0; k < len(ex.Tokens); {
		if ex.Mask[k] == 0 {
			k++
			continue
		}
		j := k
		for j < len(ex.Tokens) && ex.Mask[j] == 1 {
			j++
		}
		runs = append(runs, decode(ex.Tokens[k:j]))
		k = j
	}
	return runs
}

// loadTemplate returns a Template rendering with a model/chat fixture.
func loadTemplate(t *testing.T, name string) Template {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "model", "chat", "testdata", "configs", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.Parse(data, "")
	if err != nil {
		t.Fatal(err)
	}
	return Template{Chat: func(msgs []Message, gen bool) (string, error) {
		cm := make([]chat.Message, len(msgs))
		for i, m := range msgs {
			cm[i] = chat.Message(m)
		}
		return tmpl.Render(cm, chat.Options{AddGenerationPrompt: gen})
	}}
}

var multiTurn = []Message{
	{Role: "system", Content: "Be brief."},
	{Role: "user", Content: "2+3?"},
	{Role: "assistant", Content: "5"},
	{Role: "user", Content: "times 4?"},
	{Role: "assistant", Content: "20"},
}

func TestTemplateMask(t *testing.T) {
	noSystem := multiTurn[1:]
	cases := []struct {
		template string
		msgs     []Message
		want     []string
	}{
		{"llama2-chat", multiTurn, []string{" 5 </s>", " 20 </s>"}},
		{"mistral-instruct", noSystem, []string{"5</s> ", "20</s> "}},
		{"llama3.1-instruct", multiTurn, []string{"5<|eot_id|>", "20<|eot_id|>"}},
		{"llama3.2-instruct", noSystem, []string{"5<|eot_id|>", "20<|eot_id|>"}},
		{"smollm2", multiTurn, []string{"5<|im_end|>\n", "20<|im_end|>\n"}},
		{"smollm2", noSystem, []string{"5<|im_end|>\n", "20<|im_end|>\n"}},
		// The first Llama 3 template always ends with an assistant header:
		// the span of a turn runs to where the next one differs.
		{"llama3-instruct", multiTurn, []string{"5<|eot_id|><|start_header_id|>", "20<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"}},
	}
	for _, c := range cases {
		r := loadTemplate(t, c.template)
		ex, err := Encode(Record{ID: "x:1", Messages: c.msgs}, r, tok)
		if err != nil {
			t.Errorf("%s: %v", c.template, err)
			continue
		}
		if got := masked(ex, tok.Decode); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: masked %q, want %q", c.template, got, c.want)
		}
		full, _, _ := r.Render(c.msgs)
		if tok.Decode(ex.Tokens) != full {
			t.Errorf("%s: tokens do not decode to the rendering", c.template)
		}
	}
}

func TestTemplateRaises(t *testing.T) {
	r := loadTemplate(t, "mistral-instruct")
	_, err := Encode(Record{ID: "f:3", Messages: multiTurn}, r, tok)
	var te *chat.TemplateError
	if !errors.As(err, &te) || !te.Raised || !strings.Contains(err.Error(), "f:3") {
		t.Errorf("err = %v", err)
	}
}

func TestPlainMask(t *testing.T) {
	ex, err := Encode(Record{ID: "p:1", Messages: multiTurn}, Plain{}, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tok.Decode(ex.Tokens), "Be brief.\n2+3?\n5\ntimes 4?\n20\n"; got != want {
		t.Errorf("text %q, want %q", got, want)
	}
	if got, want := masked(ex, tok.Decode), []string{"5\n", "20\n"}; !reflect.DeepEqual(got, want) {
		t.Errorf("masked %q, want %q", got, want)
	}
}

// mergeTok merges "ab" into one token, so a span boundary inside it is
// resolved by tokenizing prefixes.
type mergeTok struct{}

func (mergeTok) Encode(s string) []int {
	var ids []int
	for i := 0; i < len(s); i++ {
		if i+1 < len(s) && s[i] == 'a' && s[i+1] == 'b' {
			ids = append(ids, 999)
			i++
			continue
		}
		ids = append(ids, int(s[i]))
	}
	return ids
}

type fixedRenderer struct {
	text  string
	spans []Span
}

func (f fixedRenderer) Render([]Message) (string, []Span, error) { return f.text, f.spans, nil }

func TestMaskAtMergedToken(t *testing.T) {
	// "xa|bby": the span starts inside the merged "ab" and ends inside
	// nothing: the merged token straddling the start is in the mask.
	ex, err := Encode(Record{ID: "m:1"}, fixedRenderer{"xabby", []Span{{2, 5}}}, mergeTok{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{'x', 999, 'b', 'y'}; !reflect.DeepEqual(ex.Tokens, want) {
		t.Fatalf("tokens %v", ex.Tokens)
	}
	if want := []uint8{0, 1, 1, 1}; !reflect.DeepEqual(ex.Mask, want) {
		t.Errorf("mask %v, want %v", ex.Mask, want)
	}
	// A span ending inside "ab" leaves the merged token out.
	ex, err = Encode(Record{ID: "m:2"}, fixedRenderer{"xxabz", []Span{{0, 3}}}, mergeTok{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint8{1, 1, 0, 0}; !reflect.DeepEqual(ex.Mask, want) {
		t.Errorf("mask %v, want %v", ex.Mask, want)
	}
}
