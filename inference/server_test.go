package inference_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/tokenizer"
)

const modelID = "tiny"

// tinyModel is a random model with a byte tokenizer and a 64-token
// context, served as modelID.
func tinyModel(t *testing.T, seed uint64) (*inference.Model, *model.Model) {
	t.Helper()
	return tinyModelOn(t, seed, engine.NewHost())
}

// plainDevice hides the Host's key/value cache operations: a model on it
// runs on an EngineGenerator.
type plainDevice struct{ engine.Device }

func tinyModelOn(t *testing.T, seed uint64, dev engine.Device) (*inference.Model, *model.Model) {
	t.Helper()
	c := modeltest.TinyConfig()
	c.VocabSize = 260
	c.MaxPositionEmbeddings = 64
	eos := 259 // never produced by the byte tokenizer; a random model may sample it
	c.EOSTokenID = model.TokenIDs{eos}
	m, err := model.New(c, seed)
	if err != nil {
		t.Fatal(err)
	}
	modeltest.Randomise(m, seed)
	tok, err := tokenizer.NewByte(c.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	im, err := inference.NewModel(m, tok, modelID, dev, 4)
	if err != nil {
		t.Fatal(err)
	}
	return im, m
}

// gen wraps a Generator: it counts calls and tokens in flight, can pause
// after each token, and records Close.
type gen struct {
	inner    inference.Generator
	delay    time.Duration
	calls    atomic.Int64
	inFlight atomic.Int64
	closed   atomic.Bool
}

func (g *gen) Generate(ctx context.Context, prompt []int, p inference.Params, yield func(int) bool) error {
	if g.closed.Load() {
		return errors.New("generate on a closed generator")
	}
	g.calls.Add(1)
	g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	return g.inner.Generate(ctx, prompt, p, func(tok int) bool {
		if g.delay > 0 {
			select {
			case <-time.After(g.delay):
			case <-ctx.Done():
			}
		}
		return yield(tok)
	})
}

func (g *gen) Close() error {
	if g.inFlight.Load() != 0 {
		return errors.New("closed while a generation runs")
	}
	g.closed.Store(true)
	return g.inner.Close()
}

func wrap(m *inference.Model, delay time.Duration) *gen {
	g := &gen{inner: m.Gen, delay: delay}
	m.Gen = g
	return g
}

type fixture struct {
	srv    *inference.Server
	url    string
	client openai.Client
	hc     *http.Client // the client's, to close its idle connections
}

// serve starts the server on a real socket on 127.0.0.1.
func serve(t *testing.T, m *inference.Model, cfg inference.Config) *fixture {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := inference.NewServer(m, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	url := "http://" + ln.Addr().String()
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	opts := []option.RequestOption{option.WithBaseURL(url + "/v1/"), option.WithMaxRetries(0), option.WithHTTPClient(hc)}
	if cfg.AuthToken != "" {
		opts = append(opts, option.WithAPIKey(cfg.AuthToken))
	} else {
		opts = append(opts, option.WithAPIKey("unused"))
	}
	return &fixture{srv: s, url: url, client: openai.NewClient(opts...), hc: hc}
}

func TestModelsList(t *testing.T) {
	m, _ := tinyModel(t, 1)
	f := serve(t, m, inference.Config{})
	page, err := f.client.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != modelID || page.Data[0].OwnedBy != "fedtune" {
		t.Fatalf("models = %+v", page.Data)
	}
	got, err := f.client.Models.Get(context.Background(), modelID)
	if err != nil || got.ID != modelID {
		t.Fatalf("get model: %v, %+v", err, got)
	}
	_, err = f.client.Models.Get(context.Background(), "nope")
	wantAPIError(t, err, 404, "model_not_found")
}

func TestCompletion(t *testing.T) {
	for _, plain := range []bool{false, true} {
		var dev engine.Device = engine.NewHost()
		if plain {
			dev = plainDevice{dev}
		}
		m, base := tinyModelOn(t, 2, dev)
		if _, batched := m.Gen.(*inference.BatcherGenerator); batched == plain {
			t.Fatalf("plain device %v: generator %T", plain, m.Gen)
		}
		testCompletion(t, m, base)
	}
}

func testCompletion(t *testing.T, m *inference.Model, base *model.Model) {
	m.StopTokens = nil
	f := serve(t, m, inference.Config{})
	ctx := context.Background()
	res, err := f.client.Completions.New(ctx, openai.CompletionNewParams{
		Model:     modelID,
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")},
		MaxTokens: openai.Int(6), Temperature: openai.Float(0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Object != "text_completion" || !strings.HasPrefix(res.ID, "cmpl-") || res.Model != modelID || len(res.Choices) != 1 {
		t.Fatalf("completion = %+v", res)
	}
	if c := res.Choices[0]; c.FinishReason != "length" {
		t.Errorf("finish_reason %q, want length", c.FinishReason)
	}
	if u := res.Usage; u.PromptTokens != 5 || u.CompletionTokens != 6 || u.TotalTokens != 11 {
		t.Errorf("usage %+v", u)
	}
	// The answer is model.Generate's, greedy.
	want, err := engine.Generate(ctx, engine.NewHost(), base, []int{'h', 'e', 'l', 'l', 'o'}, model.GenerateConfig{MaxTokens: 6})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := tokenizer.NewByte(260)
	// JSON carries each invalid UTF-8 byte as U+FFFD.
	var wantText string
	b, _ := json.Marshal(tok.Decode(want))
	json.Unmarshal(b, &wantText)
	if got := res.Choices[0].Text; got != wantText {
		t.Errorf("text %q, want %q", got, tok.Decode(want))
	}

	// Streamed: the same text, in text_completion chunks.
	st := f.client.Completions.NewStreaming(ctx, openai.CompletionNewParams{
		Model:     modelID,
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")},
		MaxTokens: openai.Int(6), Temperature: openai.Float(0),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var text strings.Builder
	var finish string
	var usage openai.CompletionUsage
	for st.Next() {
		c := st.Current()
		if c.Object != "text_completion" || c.ID == "" {
			t.Fatalf("chunk %+v", c)
		}
		for _, ch := range c.Choices {
			text.WriteString(ch.Text)
			if ch.FinishReason != "" {
				finish = string(ch.FinishReason)
			}
		}
		if c.Usage.TotalTokens != 0 {
			usage = c.Usage
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != res.Choices[0].Text || finish != "length" || usage.CompletionTokens != 6 {
		t.Errorf("stream: text %q finish %q usage %+v; want %q length 6", text.String(), finish, usage, res.Choices[0].Text)
	}
}

func TestChatCompletion(t *testing.T) {
	m, _ := tinyModel(t, 3)
	m.StopTokens = nil
	f := serve(t, m, inference.Config{})
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:     modelID,
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("hi")},
		MaxTokens: openai.Int(5), Seed: openai.Int(7), Temperature: openai.Float(0.9), TopP: openai.Float(0.9),
	}
	res, err := f.client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if res.Object != "chat.completion" || !strings.HasPrefix(res.ID, "chatcmpl-") || len(res.Choices) != 1 {
		t.Fatalf("chat completion = %+v", res)
	}
	c := res.Choices[0]
	if c.Message.Role != "assistant" || c.FinishReason != "length" || res.Usage.CompletionTokens != 5 {
		t.Errorf("choice %+v usage %+v", c, res.Usage)
	}
	// Same seed, same answer; streamed too.
	res2, err := f.client.Chat.Completions.New(ctx, params)
	if err != nil || res2.Choices[0].Message.Content != c.Message.Content {
		t.Fatalf("seeded answers differ: %v %q %q", err, res2.Choices[0].Message.Content, c.Message.Content)
	}
	st := f.client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	n := 0
	for st.Next() {
		ch := st.Current()
		if ch.Object != "chat.completion.chunk" {
			t.Fatalf("chunk object %q", ch.Object)
		}
		acc.AddChunk(ch)
		n++
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 3 || len(acc.Choices) != 1 || acc.Choices[0].Message.Content != c.Message.Content || acc.Choices[0].FinishReason != "length" {
		t.Errorf("streamed %d chunks: %+v; want %q", n, acc.Choices, c.Message.Content)
	}
}

func TestStopSequence(t *testing.T) {
	m, _ := tinyModel(t, 4)
	m.StopTokens = nil
	f := serve(t, m, inference.Config{})
	ctx := context.Background()
	full, err := f.client.Completions.New(ctx, openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: []int64{'a', 'b'}}, MaxTokens: openai.Int(20), Temperature: openai.Float(0)})
	if err != nil {
		t.Fatal(err)
	}
	text := full.Choices[0].Text
	// Stop at a piece of the answer past its start: the answer ends before it.
	runes := []rune(text)
	if len(runes) < 4 {
		t.Skipf("answer %q too short", text)
	}
	stop := string(runes[2:4])
	want := text[:strings.Index(text, stop)]
	for _, stream := range []bool{false, true} {
		p := openai.CompletionNewParams{Model: modelID, Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: []int64{'a', 'b'}},
			MaxTokens: openai.Int(20), Temperature: openai.Float(0), Stop: openai.CompletionNewParamsStopUnion{OfStringArray: []string{stop}}}
		var got, finish string
		if stream {
			st := f.client.Completions.NewStreaming(ctx, p)
			for st.Next() {
				for _, c := range st.Current().Choices {
					got += c.Text
					if c.FinishReason != "" {
						finish = string(c.FinishReason)
					}
				}
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
		} else {
			res, err := f.client.Completions.New(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			got, finish = res.Choices[0].Text, string(res.Choices[0].FinishReason)
		}
		if got != want || finish != "stop" {
			t.Errorf("stream %v, stop %q: %q (%s), want %q (stop)", stream, stop, got, finish, want)
		}
	}
}

// wantAPIError checks err is OpenAI's error with status and code.
func wantAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v, want an API error %d %s", err, status, code)
	}
	if e.StatusCode != status || e.Code != code || e.Message == "" || e.Type == "" {
		t.Errorf("error %d type %q code %q message %q; want %d %s", e.StatusCode, e.Type, e.Code, e.Message, status, code)
	}
}

func post(t *testing.T, url, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestBadInput(t *testing.T) {
	m, _ := tinyModel(t, 5)
	f := serve(t, m, inference.Config{MaxBodyBytes: 4096})
	ctx := context.Background()
	chat := f.url + "/v1/chat/completions"
	for _, tc := range []struct {
		name, url, body string
		status          int
		code            string
	}{
		{"malformed JSON", chat, `{"model": "tiny", "messages": [`, 400, "invalid_json"},
		{"not an object", chat, `[1, 2]`, 400, "invalid_json"},
		{"no model", chat, `{"messages": [{"role": "user", "content": "x"}]}`, 400, "missing_required_parameter"},
		{"no messages", chat, `{"model": "tiny"}`, 400, "missing_required_parameter"},
		{"bad role", chat, `{"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}`, 400, "invalid_value"},
		{"max_tokens 0", chat, `{"model": "tiny", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}`, 400, "invalid_value"},
		{"max_tokens -1", chat, `{"model": "tiny", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}`, 400, "invalid_value"},
		{"max_tokens 1.5", chat, `{"model": "tiny", "max_tokens": 1.5, "messages": [{"role": "user", "content": "x"}]}`, 400, "invalid_value"},
		{"n 2", chat, `{"model": "tiny", "n": 2, "messages": [{"role": "user", "content": "x"}]}`, 400, "invalid_value"},
		{"temperature 3", chat, `{"model": "tiny", "temperature": 3, "messages": [{"role": "user", "content": "x"}]}`, 400, "invalid_value"},
		{"stop 5", chat, `{"model": "tiny", "stop": ["a","b","c","d","e"], "messages": [{"role": "user", "content": "x"}]}`, 400, "invalid_value"},
		{"unknown model", chat, `{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}`, 404, "model_not_found"},
		{"prompt over the context", f.url + "/v1/completions", `{"model": "tiny", "prompt": "` + strings.Repeat("x", 70) + `"}`, 400, "context_length_exceeded"},
		{"prompt + max_tokens over the context", f.url + "/v1/completions", `{"model": "tiny", "max_tokens": 60, "prompt": "` + strings.Repeat("x", 10) + `"}`, 400, "context_length_exceeded"},
		{"token out of vocabulary", f.url + "/v1/completions", `{"model": "tiny", "prompt": [1, 999]}`, 400, "invalid_value"},
		{"body too large", chat, `{"model": "tiny", "messages": [{"role": "user", "content": "` + strings.Repeat("x", 5000) + `"}]}`, 413, "request_too_large"},
		{"unknown URL", f.url + "/v1/embeddings", `{}`, 404, "unknown_url"},
	} {
		status, body := post(t, tc.url, tc.body)
		if status != tc.status || !strings.Contains(body, `"code":"`+tc.code+`"`) || !strings.Contains(body, `"error":{"message":`) {
			t.Errorf("%s: %d %s; want %d %s", tc.name, status, body, tc.status, tc.code)
		}
		if tc.code == "model_not_found" && !strings.Contains(body, `this node serves \"tiny\"`) {
			t.Errorf("%s: %s; want the served model named", tc.name, body)
		}
	}
	// Through the official client too.
	_, err := f.client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-4",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	wantAPIError(t, err, 404, "model_not_found")
	_, err = f.client.Completions.New(ctx, openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(strings.Repeat("y", 100))}})
	wantAPIError(t, err, 400, "context_length_exceeded")
	_, err = f.client.Completions.New(ctx, openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("y")}, MaxTokens: openai.Int(0)})
	wantAPIError(t, err, 400, "invalid_value")
	if n := f.srv.Active(); n != 0 {
		t.Errorf("%d requests still active", n)
	}
}

func TestAuth(t *testing.T) {
	m, _ := tinyModel(t, 6)
	f := serve(t, m, inference.Config{AuthToken: "s3cret"})
	if _, err := f.client.Models.List(context.Background()); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	bad := openai.NewClient(option.WithBaseURL(f.url+"/v1/"), option.WithAPIKey("wrong"), option.WithMaxRetries(0))
	_, err := bad.Models.List(context.Background())
	wantAPIError(t, err, 401, "invalid_api_key")
	if status, _ := post(t, f.url+"/v1/completions", `{}`); status != 401 {
		t.Errorf("no token: %d, want 401", status)
	}
	res, err := http.Get(f.url + "/metrics")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("metrics without a token: %v %v", err, res)
	}
	res.Body.Close()
}

func TestQueueFull(t *testing.T) {
	m, _ := tinyModel(t, 7)
	m.StopTokens = nil
	g := wrap(m, 50*time.Millisecond)
	f := serve(t, m, inference.Config{MaxConcurrent: 1, MaxQueue: -1})
	ctx := context.Background()
	st := f.client.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("a")}, MaxTokens: openai.Int(20)})
	defer st.Close()
	for g.inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	_, err := f.client.Completions.New(ctx, openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("b")}, MaxTokens: openai.Int(2)})
	wantAPIError(t, err, 429, "rate_limit_exceeded")
}

func TestRequestTimeout(t *testing.T) {
	m, _ := tinyModel(t, 8)
	m.StopTokens = nil
	wrap(m, 30*time.Millisecond)
	_, key, _ := ed25519.GenerateKey(nil)
	f := serve(t, m, inference.Config{RequestTimeout: 200 * time.Millisecond, Receipter: inference.Signer{Key: key}})
	res, err := f.client.Completions.New(context.Background(), openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("a")}, MaxTokens: openai.Int(50)})
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Usage.CompletionTokens; n == 0 || n >= 50 || res.Choices[0].FinishReason != "length" {
		t.Errorf("cut answer: %d tokens, finish %q; want fewer than 50, length", n, res.Choices[0].FinishReason)
	}
	// Its receipt says the time limit cut it: the tokens are the start of
	// what a replay generates.
	var body struct {
		Receipt json.RawMessage `json:"receipt"`
	}
	if err := json.Unmarshal([]byte(res.RawJSON()), &body); err != nil {
		t.Fatal(err)
	}
	r, err := receipt.Verify(body.Receipt)
	if err != nil || r.Cut != receipt.CutTime || r.CompletionTokens != int(res.Usage.CompletionTokens) {
		t.Errorf("receipt of the cut answer: %+v, %v; want cut %q", r, err, receipt.CutTime)
	}
}

// TestClientDisconnectMidStream: the generation stops and nothing is left
// running.
func TestClientDisconnectMidStream(t *testing.T) {
	m, _ := tinyModel(t, 9)
	m.StopTokens = nil
	bg := m.Gen.(*inference.BatcherGenerator)
	g := wrap(m, 20*time.Millisecond)
	f := serve(t, m, inference.Config{})
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	st := f.client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: modelID,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}, MaxTokens: openai.Int(50)})
	for i := 0; i < 3 && st.Next(); i++ {
	}
	cancel()
	st.Close()
	deadline := time.Now().Add(5 * time.Second)
	for f.srv.Active() != 0 || g.inFlight.Load() != 0 || bg.Stats().Active != 0 || bg.Stats().Queued != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after the client left: %d requests active, %d generations running, batcher %+v", f.srv.Active(), g.inFlight.Load(), bg.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.hc.CloseIdleConnections()
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, %d before the request", runtime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The server still answers.
	if _, err := f.client.Models.List(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSwapMidStream: a model switch while a stream runs loses nothing;
// the old model is closed only after its last request, and new requests
// go to the new model.
func TestSwapMidStream(t *testing.T) {
	a, _ := tinyModel(t, 10)
	a.StopTokens = nil
	ga := wrap(a, 10*time.Millisecond)
	b, _ := tinyModel(t, 11)
	gb := wrap(b, 0)
	f := serve(t, a, inference.Config{})
	ctx := context.Background()
	const n = 30
	st := f.client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: modelID,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}, MaxTokens: openai.Int(n),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}})
	var acc openai.ChatCompletionAccumulator
	var closed <-chan error
	chunks := 0
	for st.Next() {
		acc.AddChunk(st.Current())
		chunks++
		if chunks == 3 {
			closed = f.srv.Swap(b)
			select {
			case err := <-closed:
				t.Fatalf("old model closed while its stream runs (%v)", err)
			default:
			}
			// A request now goes to the new model.
			if _, err := f.client.Completions.New(ctx, openai.CompletionNewParams{Model: modelID,
				Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("q")}, MaxTokens: openai.Int(2)}); err != nil {
				t.Fatal(err)
			}
			if gb.calls.Load() != 1 {
				t.Errorf("new model ran %d requests, want 1", gb.calls.Load())
			}
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if acc.Usage.CompletionTokens != n || acc.Choices[0].FinishReason != "length" {
		t.Errorf("stream across the swap: %d tokens, finish %q; want %d, length", acc.Usage.CompletionTokens, acc.Choices[0].FinishReason, n)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("old model not closed after its last request")
	}
	if !ga.closed.Load() || ga.calls.Load() != 1 {
		t.Errorf("old model: closed %v, calls %d", ga.closed.Load(), ga.calls.Load())
	}
}

func TestConcurrentRequests(t *testing.T) {
	m, _ := tinyModel(t, 12)
	f := serve(t, m, inference.Config{MaxConcurrent: 2})
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Go(func() {
			_, err := f.client.Completions.New(context.Background(), openai.CompletionNewParams{Model: modelID,
				Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("p" + string(rune('a'+i)))}, MaxTokens: openai.Int(4)})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestMetrics(t *testing.T) {
	m, _ := tinyModel(t, 13)
	f := serve(t, m, inference.Config{})
	if _, err := f.client.Completions.New(context.Background(), openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("a")}, MaxTokens: openai.Int(3)}); err != nil {
		t.Fatal(err)
	}
	post(t, f.url+"/v1/completions", `{`)
	res, err := http.Get(f.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var lines []string
	for sc := bufio.NewScanner(res.Body); sc.Scan(); {
		lines = append(lines, sc.Text())
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{
		`fedtune_inference_requests_total{code="200",endpoint="/v1/completions"} 1`,
		`fedtune_inference_requests_total{code="400",endpoint="/v1/completions"} 1`,
		`fedtune_inference_prompt_tokens_total 1`,
		`fedtune_inference_time_to_first_token_seconds_count 1`,
		`fedtune_inference_tokens_per_second_count`,
		`fedtune_inference_queue_length 0`,
		`fedtune_inference_active_requests 0`,
		`fedtune_inference_generated_tokens_total`,
		`fedtune_inference_request_duration_seconds_bucket`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
