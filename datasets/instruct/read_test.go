package instruct

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeFormats(t *testing.T) {
	cases := []struct {
		name   string
		data   string
		format Format
		want   [][]Message
	}{
		{"messages", "\xef\xbb\xbf" + `{"messages":[{"role":"system","content":"S"},{"role":"user","content":"U"},{"role":"assistant","content":"A"}],"id":7}` + "\n\n" +
			`{"messages":[{"role":"user","content":""},{"role":"assistant","content":"B"}]}` + "\r\n",
			Messages, [][]Message{
				{{Role: "system", Content: "S"}, {Role: "user", Content: "U"}, {Role: "assistant", Content: "A"}},
				{{Role: "user", Content: ""}, {Role: "assistant", Content: "B"}},
			}},
		{"alpaca", `{"instruction":"Add","input":"2 3","output":"5"}` + "\n" + `{"instruction":"Greet","input":"","output":"Hi"}` + "\n" + `{"instruction":"Bye","output":"Ciao"}`,
			Alpaca, [][]Message{
				{{Role: "user", Content: "Add\n\n2 3"}, {Role: "assistant", Content: "5"}},
				{{Role: "user", Content: "Greet"}, {Role: "assistant", Content: "Hi"}},
				{{Role: "user", Content: "Bye"}, {Role: "assistant", Content: "Ciao"}},
			}},
		{"prompt-completion", `{"prompt":"Q: 1+1\nA:","completion":" 2"}` + "\n" +
			`{"prompt":[{"role":"user","content":"hi"}],"completion":[{"role":"assistant","content":"yo"}]}` + "\n",
			PromptCompletion, [][]Message{
				{{Role: "user", Content: "Q: 1+1\nA:"}, {Role: "assistant", Content: " 2"}},
				{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo"}},
			}},
	}
	for _, c := range cases {
		recs, f, err := Decode([]byte(c.data), "f.jsonl")
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if f != c.format {
			t.Errorf("%s: format %s", c.name, f)
		}
		var got [][]Message
		for _, r := range recs {
			got = append(got, r.Messages)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v", c.name, got)
		}
	}
	recs, _, _ := Decode([]byte("\n"+`{"prompt":"a","completion":"b"}`+"\n\n"+`{"prompt":"c","completion":"d"}`), "x.jsonl")
	if recs[0].ID != "x.jsonl:2" || recs[1].ID != "x.jsonl:4" {
		t.Errorf("ids %s %s", recs[0].ID, recs[1].ID)
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct{ data, want string }{
		{"", "no records"},
		{"{bad", "f.jsonl:1: not a JSON object"},
		{`[1,2]`, "f.jsonl:1: not a JSON object"},
		{`{"text":"x"}`, `f.jsonl:1: record has none of`},
		{`{"prompt":"a","completion":"b"}` + "\n" + `{"instruction":"i","output":"o"}`, "f.jsonl:2: a alpaca record in a prompt-completion file (format set by line 1)"},
		{`{"prompt":"a","completion":"b","output":"o"}`, "f.jsonl:1: record mixes the fields of formats alpaca and prompt-completion"},
		{`{"instruction":"i"}`, `f.jsonl:1: field "output": missing`},
		{`{"instruction":"i","output":5}`, `f.jsonl:1: field "output": not a string`},
		{`{"instruction":"","output":"o"}`, `f.jsonl:1: field "instruction": empty`},
		{`{"prompt":"p"}`, `f.jsonl:1: field "completion": missing`},
		{`{"completion":"c"}`, `f.jsonl:1: field "prompt": missing`},
		{`{"messages":"hi"}`, `f.jsonl:1: field "messages": not a list of objects`},
		{`{"messages":[]}`, `f.jsonl:1: field "messages": empty`},
		{`{"messages":[{"role":"user","content":"a"},{"role":"bot","content":"b"}]}`, `f.jsonl:1: messages[1]: field "role": "bot" is not system, user or assistant`},
		{`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":["b"]}]}`, `f.jsonl:1: messages[1]: field "content": not a string`},
		{`{"messages":[{"role":"user","content":"a"},{"role":"assistant"}]}`, `f.jsonl:1: messages[1]: field "content": missing`},
		{`{"messages":[{"role":"user","content":"a"}]}`, `f.jsonl:1: no assistant turn`},
		{`{"prompt":[{"role":"user","content":"a"}],"completion":"b"}`, `f.jsonl:1: field "completion": not a list of objects`},
		{"{\"prompt\":\"a\xff\",\"completion\":\"b\"}", "f.jsonl:1: invalid UTF-8"},
	}
	for _, c := range cases {
		_, _, err := Decode([]byte(c.data), "f.jsonl")
		if err == nil || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.data, err, c.want)
		}
	}
}

func TestRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.jsonl")
	if err := os.WriteFile(p, []byte(`{"prompt":"a","completion":"b"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	recs, f, err := Read(p)
	if err != nil || f != PromptCompletion || len(recs) != 1 || recs[0].ID != "d.jsonl:1" {
		t.Errorf("%v %s %v", recs, f, err)
	}
	if _, _, err := Read(filepath.Join(t.TempDir(), "none.jsonl")); err == nil {
		t.Error("missing file read")
	}
}
