package inference_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
)

// fakeReceipts gives each answer a receipt naming its token count and
// records what it was asked.
type fakeReceipts struct {
	mu   sync.Mutex
	reqs []inference.ReceiptRequest
}

func (f *fakeReceipts) Receipt(_ context.Context, r inference.ReceiptRequest) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	return json.Marshal(map[string]any{"tokens": len(r.Tokens), "model": r.ModelDigest})
}

// TestStreamWire reads a stream as bytes: data: lines of chunk objects,
// then data: [DONE]; the receipt in the last chunk and the trailer.
func TestStreamWire(t *testing.T) {
	m, _ := tinyModel(t, 20)
	m.StopTokens = nil
	rc := &fakeReceipts{}
	f := serve(t, m, inference.Config{Receipter: rc})
	body := `{"model":"tiny","stream":true,"stream_options":{"include_usage":true},"max_tokens":4,"seed":3,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`
	res, err := http.Post(f.url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("status %d content type %q", res.StatusCode, ct)
	}
	var events []string
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("line %q is not a data: line", line)
		}
		events = append(events, data)
	}
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q: want chunks then [DONE]", events)
	}
	type chunk struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
		Choices []struct {
			Index        int             `json:"index"`
			Delta        json.RawMessage `json:"delta"`
			FinishReason *string         `json:"finish_reason"`
		} `json:"choices"`
		Usage *struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
		Receipt json.RawMessage `json:"receipt"`
	}
	var cs []chunk
	for _, e := range events[:len(events)-1] {
		var c chunk
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("chunk %s: %v", e, err)
		}
		if c.Object != "chat.completion.chunk" || c.ID != cs0(cs, c).ID || c.Model != "tiny" || c.Created == 0 {
			t.Errorf("chunk %s", e)
		}
		cs = append(cs, c)
	}
	if string(cs[0].Choices[0].Delta) != `{"role":"assistant","content":""}` {
		t.Errorf("first delta %s", cs[0].Choices[0].Delta)
	}
	fin := cs[len(cs)-2]
	if fin.Choices[0].FinishReason == nil || *fin.Choices[0].FinishReason != "length" || string(fin.Choices[0].Delta) != `{}` {
		t.Errorf("finish chunk %+v", fin)
	}
	last := cs[len(cs)-1]
	if len(last.Choices) != 0 || last.Usage == nil || last.Usage.CompletionTokens != 4 {
		t.Errorf("usage chunk %+v", last)
	}
	if string(last.Receipt) != `{"model":"`+m.Digest+`","tokens":4}` {
		t.Errorf("receipt in the last chunk: %s", last.Receipt)
	}
	for i, c := range cs[:len(cs)-1] {
		if c.Receipt != nil {
			t.Errorf("receipt before the last chunk")
		}
		if c.Usage != nil || !strings.Contains(events[i], `"usage":null`) {
			t.Errorf("chunk %d: want usage null: %s", i, events[i])
		}
	}
	if tr, _ := base64.StdEncoding.DecodeString(res.Trailer.Get(inference.ReceiptHeader)); string(tr) != string(last.Receipt) {
		t.Errorf("receipt trailer %q", res.Trailer.Get(inference.ReceiptHeader))
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) != 1 || rc.reqs[0].Params.Seed != 3 || len(rc.reqs[0].Tokens) != 4 || string(rc.reqs[0].Request) != body || rc.reqs[0].Response == "" {
		t.Errorf("receipt requests %+v", rc.reqs)
	}
}

func cs0[T any](cs []T, c T) T {
	if len(cs) == 0 {
		return c
	}
	return cs[0]
}

// TestReceiptWhole: a non-streamed answer carries its receipt in the body
// and the header.
func TestReceiptWhole(t *testing.T) {
	m, _ := tinyModel(t, 21)
	m.StopTokens = nil
	f := serve(t, m, inference.Config{Receipter: &fakeReceipts{}})
	var res *http.Response
	out, err := f.client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: modelID,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}, MaxTokens: openai.Int(3)},
		option.WithResponseInto(&res))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model":"` + m.Digest + `","tokens":3}`
	if got := out.JSON.ExtraFields["receipt"].Raw(); got != want {
		t.Errorf("body receipt %s, want %s", got, want)
	}
	if h, _ := base64.StdEncoding.DecodeString(res.Header.Get(inference.ReceiptHeader)); string(h) != want {
		t.Errorf("header receipt %q", res.Header.Get(inference.ReceiptHeader))
	}
}

// TestSignedReceipts: with Signer, the header and body carry the same
// signed envelope, naming the model, the request and the sampling.
func TestSignedReceipts(t *testing.T) {
	m, _ := tinyModel(t, 22)
	_, key, _ := ed25519.GenerateKey(nil)
	f := serve(t, m, inference.Config{Receipter: inference.Signer{Key: key}})
	body := `{"model":"tiny","prompt":"abc","max_tokens":5,"temperature":0.8,"seed":42,"stop":["zz"]}`
	res, err := http.Post(f.url+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Receipt json.RawMessage `json:"receipt"`
		Usage   struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	env, _, err := receipt.Parse([]byte(res.Header.Get(inference.ReceiptHeader)))
	if err != nil {
		t.Fatal(err)
	}
	if string(env) != string(out.Receipt) {
		t.Errorf("header envelope %s, body %s", env, out.Receipt)
	}
	r, err := receipt.Verify(env)
	if err != nil {
		t.Fatal(err)
	}
	if r.Model != m.Digest || r.Block != nil || r.RequestHash != receipt.RequestHash([]byte(body)) || r.PromptTokens != 3 ||
		r.CompletionTokens != out.Usage.CompletionTokens || r.Sampling.Seed != 42 || r.Sampling.Temperature != 0.8 ||
		r.Sampling.MaxTokens != 5 || len(r.Sampling.Stop) != 1 {
		t.Errorf("receipt %+v", r)
	}
	// An altered envelope is refused.
	bad := strings.Replace(string(env), `"signatures"`, `"signatures" `, 1)
	bad = strings.Replace(bad, "A", "B", 1)
	if _, err := receipt.Verify([]byte(bad)); err == nil {
		t.Error("an altered receipt verifies")
	}
}

// TestSignerBundles: a Signer with Dir writes each answer's bundle as
// Dir/<request-hash>.json, which checks against its receipt.
func TestSignerBundles(t *testing.T) {
	m, _ := tinyModel(t, 23)
	_, key, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	f := serve(t, m, inference.Config{Receipter: inference.Signer{Key: key, Dir: dir}})
	body := `{"model":"tiny","prompt":"abc","max_tokens":4,"temperature":0}`
	if code, out := post(t, f.url+"/v1/completions", body); code != http.StatusOK {
		t.Fatalf("status %d: %s", code, out)
	}
	data, err := os.ReadFile(inference.BundlePath(dir, []byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := receipt.Parse(data)
	if err != nil || b == nil {
		t.Fatalf("bundle %s: %v", data, err)
	}
	r, err := b.Check()
	if err != nil {
		t.Fatal(err)
	}
	if string(b.Request) != body || r.CompletionTokens != len(b.CompletionIDs) || b.Response == "" {
		t.Errorf("bundle request %q, %d completion ids for %d tokens, response %q", b.Request, len(b.CompletionIDs), r.CompletionTokens, b.Response)
	}
}
