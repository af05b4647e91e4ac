package inference

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/strictjson"
	"github.com/fedtune/fedtune/model/tokenizer"
)

func TestDecodeRequest(t *testing.T) {
	r, err := DecodeRequest(ChatCompletions, []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],
		"max_completion_tokens":7,"max_tokens":7,"temperature":0,"top_p":0.5,"seed":-2,"stop":"x","n":1,
		"stream":true,"stream_options":{"include_usage":true},"logit_bias":{},"user":"u"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.MaxTokens != 7 || r.Temperature != 0 || r.TopP != 0.5 || *r.Seed != -2 || len(r.Stop) != 1 || !r.Stream || !r.IncludeUsage ||
		len(r.Messages) != 1 || r.Messages[0] != (ChatMessage{Role: "user", Content: "hi"}) {
		t.Errorf("decoded %+v", r)
	}
	r, err = DecodeRequest(Completions, []byte(`{"model":"m","prompt":[[1,2,3]],"stop":null}`))
	if err != nil || len(r.PromptTokens) != 3 || r.Stop != nil || r.Temperature != 1 || r.TopP != 1 {
		t.Errorf("decoded %+v, %v", r, err)
	}
	for _, bad := range []string{
		`{"model":"m","prompt":["a","b"]}`, `{"model":"m","prompt":[]}`, `{"model":"m","prompt":{}}`,
		`{"model":"m","prompt":"a","stream_options":{"include_usage":true}}`, `{"model":"m","prompt":"a","top_p":0}`,
		`{"model":"m","prompt":"a","seed":1.5}`, `{"model":"m","prompt":"a","stop":[1]}`, `{"model":"m","prompt":"a","stop":[""]}`,
		`{"model":"m","prompt":"a","max_tokens":"5"}`, `{"model":"m","prompt":"a","n":0}`,
		`{"model":"m","prompt":"a","stop":["a","b"],"stop":null}`, `{"model":"m","prompt":"a","Stop":"b"}`,
		`{"model":"m","prompt":"a","max_tokens":3,"max_completion_tokens":7}`,
	} {
		if _, err := DecodeRequest(Completions, []byte(bad)); err == nil || err.Status != 400 {
			t.Errorf("%s: %v, want a 400", bad, err)
		}
	}
	for _, bad := range []string{
		`{"model":"m","messages":[]}`, `{"model":"m","messages":[{"role":"user"}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, `{"model":"m","messages":"hi"}`,
	} {
		if _, err := DecodeRequest(ChatCompletions, []byte(bad)); err == nil || err.Status != 400 {
			t.Errorf("%s: %v, want a 400", bad, err)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"hello","max_tokens":5,"stop":["\n"],"seed":1}`,
		`{"model":"m","prompt":[1,2],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"t"}]}],"n":1,"temperature":0.7,"top_p":0.9}`,
		`{"model":"m","messages":[{"role":"assistant","content":null}],"max_completion_tokens":3}`,
		`{`, `null`, `[]`, `{"model":1}`,
		`{"model":"m","prompt":"a","PROMPT":"b"}`, `{"model":"m","prompt":"a","prompt":"b"}`, `{"MODEL":"m","prompt":"a"}`,
		`{"model":"m","prompt":"a","logit_bias":{"1":5}}`, `{"model":"m","prompt":"a","metadata":{"Model":"x"}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, e := range []Endpoint{Completions, ChatCompletions} {
			r, err := DecodeRequest(e, []byte(body))
			if err != nil {
				if err.Status != 400 || err.Type != "invalid_request_error" || err.Message == "" {
					t.Fatalf("error %+v", err)
				}
				if b, jerr := err.MarshalJSON(); jerr != nil || !strings.HasPrefix(string(b), `{"error":{"message":`) {
					t.Fatalf("error JSON %s, %v", b, jerr)
				}
				continue
			}
			if r.Model == "" || r.MaxTokens < 0 || r.Temperature < 0 || r.Temperature > 2 || r.TopP <= 0 || r.TopP > 1 || len(r.Stop) > 4 {
				t.Fatalf("accepted %+v", r)
			}
			// What is accepted reads one way: UTF-8, no duplicate or
			// case-twin names.
			if !utf8.ValidString(body) || strictjson.CheckNames([]byte(body)) != nil {
				t.Fatalf("accepted a body readable two ways: %q", body)
			}
			for _, st := range r.Stop {
				if len(st) > receipt.MaxStopLen {
					t.Fatalf("accepted a stop string of %d bytes", len(st))
				}
			}
			if r.IncludeUsage && !r.Stream {
				t.Fatalf("include_usage without stream: %+v", r)
			}
			switch e {
			case Completions:
				if r.PromptTokens == nil && r.Messages != nil {
					t.Fatalf("completion with messages: %+v", r)
				}
			case ChatCompletions:
				if len(r.Messages) == 0 {
					t.Fatalf("chat without messages: %+v", r)
				}
			}
		}
	})
}

// TestTextStream: pieces join to the answer up to its stop sequence, and
// no piece ends in the middle of a UTF-8 character.
func TestTextStream(t *testing.T) {
	tok := tokenizer.Byte{}
	text := "héllo, wörld! stop here"
	for _, stop := range [][]string{nil, {"stop"}, {"wör", "zz"}, {"ö"}} {
		s := &textStream{tok: tok, stop: stop}
		var got strings.Builder
		stopped := false
		for _, id := range tok.Encode(text) {
			p, st := s.add(id)
			if !utf8.ValidString(p) {
				t.Errorf("stop %q: piece %q splits a character", stop, p)
			}
			got.WriteString(p)
			if st {
				stopped = true
				break
			}
		}
		got.WriteString(s.flush())
		want := text
		for _, st := range stop {
			if i := strings.Index(want, st); i >= 0 {
				want = want[:i]
			}
		}
		if got.String() != want || stopped != (len(want) < len(text)) {
			t.Errorf("stop %q: %q (stopped %v), want %q", stop, got.String(), stopped, want)
		}
	}
}

// TestStopAfter: the tokens the server keeps are those up to the one
// that completes the first stop sequence met.
func TestStopAfter(t *testing.T) {
	tok := tokenizer.Byte{}
	ids := tok.Encode("hello, wörld")
	for _, c := range []struct {
		stop []string
		want int
	}{
		{nil, len(ids)},
		{[]string{"zz"}, len(ids)},
		{[]string{"o, w"}, 8},
		{[]string{"zz", "ll"}, 4},
		{[]string{"ö"}, 10}, // two bytes: kept up to the second
		{[]string{"h"}, 1},
	} {
		if got := StopAfter(tok, ids, c.stop); got != c.want {
			t.Errorf("stop %q: keeps %d, want %d", c.stop, got, c.want)
		}
	}
}
