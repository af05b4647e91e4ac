package inference_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// TestAttackAuthRefusalIsPerRequest: a request without the token is
// refused, and the requests with it that follow, or run beside it, are
// still answered (a refusal once disabled the endpoint for everyone).
func TestAttackAuthRefusalIsPerRequest(t *testing.T) {
	m, _ := tinyModel(t, 21)
	f := serve(t, m, inference.Config{AuthToken: "s3cret"})
	ctx := context.Background()
	bad := openai.NewClient(option.WithBaseURL(f.url+"/v1/"), option.WithAPIKey("wrong"), option.WithMaxRetries(0))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, err := bad.Models.List(ctx)
			wantAPIError(t, err, 401, "invalid_api_key")
		})
	}
	wg.Wait()
	for i := range 3 {
		l, err := f.client.Models.List(ctx)
		if err != nil || len(l.Data) != 1 || l.Data[0].ID != modelID {
			t.Fatalf("list %d with the token after refusals: %+v, %v", i, l, err)
		}
		res, err := f.client.Completions.New(ctx, openai.CompletionNewParams{Model: modelID,
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("a")}, MaxTokens: openai.Int(2)})
		if err != nil || len(res.Choices) != 1 {
			t.Fatalf("completion %d with the token after refusals: %+v, %v", i, res, err)
		}
	}
}

// TestAttackAmbiguousRequest: a body readers could read two ways is
// refused, since the receipt signs its bytes and a third party reads it
// with its own parser: duplicate members, members equal up to case, names
// this server reads spelt in another case (encoding/json would read
// "PROMPT" as prompt, "ſtop" as stop) and invalid UTF-8. Parameters that
// change the answer and that the server does not implement are refused,
// not ignored, and so are stop sequences too long for a receipt.
func TestAttackAmbiguousRequest(t *testing.T) {
	m, _ := tinyModel(t, 22)
	f := serve(t, m, inference.Config{})
	comp, chat := f.url+"/v1/completions", f.url+"/v1/chat/completions"
	for _, tc := range []struct {
		name, url, body string
		code, says      string
	}{
		{"duplicate prompt", comp, `{"model":"tiny","prompt":"benign","prompt":"evil"}`, "invalid_json", `duplicate field \"prompt\"`},
		{"duplicate prompt spelt with an escape", comp, `{"model":"tiny","prompt":"benign","\u0070rompt":"evil"}`, "invalid_json", `duplicate field \"prompt\"`},
		{"prompt twins in case", comp, `{"model":"tiny","prompt":"benign","PROMPT":"evil"}`, "invalid_json", "differ only in case"},
		{"model in upper case", comp, `{"MODEL":"tiny","prompt":"a"}`, "invalid_json", `did you mean \"model\"`},
		{"long s in stop", comp, `{"model":"tiny","prompt":"a","ſtop":"x"}`, "invalid_json", `did you mean \"stop\"`},
		{"kelvin sign in max_tokens", comp, `{"model":"tiny","prompt":"a","max_to\u212Aens":3}`, "invalid_json", `did you mean \"max_tokens\"`},
		{"content twins in a message", chat, `{"model":"tiny","messages":[{"role":"user","content":"a","Content":"b"}]}`, "invalid_json", "differ only in case"},
		{"role in another case", chat, `{"model":"tiny","messages":[{"ROLE":"user","content":"a"}]}`, "invalid_json", `did you mean \"role\"`},
		{"duplicate temperature", comp, `{"model":"tiny","prompt":"a","temperature":0,"temperature":2}`, "invalid_json", `duplicate field \"temperature\"`},
		{"invalid UTF-8", comp, "{\"model\":\"tiny\",\"prompt\":\"a\xff\"}", "invalid_json", "not valid UTF-8"},
		{"logit_bias", comp, `{"model":"tiny","prompt":"a","logit_bias":{"65":100}}`, "unsupported_parameter", "logit_bias"},
		{"frequency_penalty", chat, `{"model":"tiny","messages":[{"role":"user","content":"a"}],"frequency_penalty":1.5}`, "unsupported_parameter", "frequency_penalty"},
		{"logprobs", chat, `{"model":"tiny","messages":[{"role":"user","content":"a"}],"logprobs":true}`, "unsupported_parameter", "logprobs"},
		{"echo", comp, `{"model":"tiny","prompt":"a","echo":true}`, "unsupported_parameter", "echo"},
		{"response_format json", chat, `{"model":"tiny","messages":[{"role":"user","content":"a"}],"response_format":{"type":"json_object"}}`, "unsupported_parameter", "response_format"},
		{"tools", chat, `{"model":"tiny","messages":[{"role":"user","content":"a"}],"tools":[{"type":"function","function":{"name":"f"}}]}`, "unsupported_parameter", "tools"},
		{"prompt and messages to completions", comp, `{"model":"tiny","prompt":[1,2],"messages":[{"role":"user","content":"a"}]}`, "invalid_value", "messages is for /v1/chat/completions"},
		{"prompt and messages to chat", chat, `{"model":"tiny","prompt":[1,2],"messages":[{"role":"user","content":"a"}]}`, "invalid_value", "prompt is for /v1/completions"},
		{"max_tokens and max_completion_tokens apart", chat, `{"model":"tiny","messages":[{"role":"user","content":"a"}],"max_tokens":3,"max_completion_tokens":40}`, "invalid_value", "differ: give one of them"},
		{"nested 20000 deep", comp, `{"model":"tiny","prompt":"a","metadata":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, "invalid_json", "exceeded max depth"},
		{"stop too long for a receipt", comp, `{"model":"tiny","prompt":"a","stop":"` + strings.Repeat("z", 300) + `"}`, "invalid_value", "300 bytes, at most 256"},
	} {
		status, body := post(t, tc.url, tc.body)
		if status != 400 || !strings.Contains(body, `"code":"`+tc.code+`"`) || !strings.Contains(body, tc.says) {
			t.Errorf("%s: %d %s; want 400 %s saying %q", tc.name, status, body, tc.code, tc.says)
		}
	}
	// What OpenAI's clients send at the defaults still passes.
	for _, body := range []string{
		`{"model":"tiny","prompt":"a","max_tokens":1,"logit_bias":{},"frequency_penalty":0,"presence_penalty":0,"logprobs":null,"echo":false,"suffix":"","best_of":1,"user":"u"}`,
		`{"model":"tiny","messages":[{"role":"user","content":"a","name":"x"}],"max_tokens":1,"logprobs":false,"response_format":{"type":"text"},"tools":[],"metadata":{"Model":"free text"}}`,
	} {
		url := comp
		if strings.Contains(body, "messages") {
			url = chat
		}
		if status, res := post(t, url, body); status != 200 {
			t.Errorf("%s: %d %s, want 200", body, status, res)
		}
	}
	if n := f.srv.Active(); n != 0 {
		t.Errorf("%d requests still active", n)
	}
}

// TestAttackSlowBody: a client that sends its headers and then trickles
// (or never sends) its body is answered 408 at the body's time limit, not
// held forever.
func TestAttackSlowBody(t *testing.T) {
	m, _ := tinyModel(t, 23)
	m.StopTokens = nil
	wrap(m, 40*time.Millisecond)
	f := serve(t, m, inference.Config{BodyTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"tiny","prompt":"a","max_tokens":1}`
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10])
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body after %v: %v", time.Since(start), err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusRequestTimeout {
		t.Errorf("status %d, want 408", res.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.srv.Active() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still active", f.srv.Active())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A body sent in time, for an answer longer than the limit, is
	// unaffected by it.
	res2, err := f.client.Completions.New(context.Background(), openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("a")}, MaxTokens: openai.Int(12)})
	if err != nil || res2.Usage.CompletionTokens != 12 {
		t.Fatalf("a 0.5 s answer with a 0.3 s body limit: %+v, %v", res2, err)
	}
}

// TestAttackLineageStrings: the lineage is read from one ledger node and a
// job's coordinator, either of which may lie. Names with bidi overrides,
// control characters or bytes that are not UTF-8 come out written visibly,
// huge ones cut, markup as text, and a NaN or infinite loss (which JSON
// cannot carry: the whole answer failed) left out.
func TestAttackLineageStrings(t *testing.T) {
	m, _ := tinyModel(t, 24)
	nan, inf := math.NaN(), math.Inf(1)
	ok := 2.5
	m.Lineage = &inference.Lineage{Model: m.Digest, Job: "job\u202e1",
		Rounds: []inference.LineageRound{
			{Round: 1, Model: m.Digest, EvalLoss: &nan, EvalSource: inference.EvalFromCoordinator,
				Contributors: []inference.LineageContributor{{Member: "m", Weight: inf, LossRemoved: &inf}}},
			{Round: 2, Model: m.Digest, EvalLoss: &ok, EvalSource: inference.EvalFromLedger},
		},
		Datasets: []inference.LineageDataset{
			{Digest: "d", Name: "\u202egnp.exe", Licence: "MIT\x07\xff"},
			{Digest: "d2", Name: `<img src=x onerror="alert(1)">`, Licence: strings.Repeat("A", 100000)},
		}}
	f := serve(t, m, inference.Config{})
	code, body := get(t, f.url+inference.LineagePath)
	if code != 200 {
		t.Fatalf("GET lineage: %d %s", code, body)
	}
	var l inference.Lineage
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatal(err)
	}
	if l.Job != `job\u202E1` || l.Datasets[0].Name != `\u202Egnp.exe` || l.Datasets[0].Licence != `MIT\x07\xFF` {
		t.Errorf("job %q, name %q, licence %q: want the bidi override and control bytes written out", l.Job, l.Datasets[0].Name, l.Datasets[0].Licence)
	}
	if l.Datasets[1].Name != `<img src=x onerror="alert(1)">` || len(l.Datasets[1].Licence) > inference.MaxLineageText || !strings.HasSuffix(l.Datasets[1].Licence, "…") {
		t.Errorf("name %q, licence of %d bytes: want the markup as text and the licence cut", l.Datasets[1].Name, len(l.Datasets[1].Licence))
	}
	r1, r2 := l.Rounds[0], l.Rounds[1]
	if r1.EvalLoss != nil || r1.EvalSource != "" || r1.Contributors[0].LossRemoved != nil || r1.Contributors[0].Weight != 0 || r2.EvalLoss == nil || *r2.EvalLoss != 2.5 {
		t.Errorf("rounds %+v %+v: want the non-finite numbers left out", r1, r2)
	}
	// The page's policy: no inline script, no framing, no base or form
	// target; its assets are not sniffed.
	res, err := http.Get(f.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'", "object-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") || res.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("CSP %q, X-Frame-Options %q", csp, res.Header.Get("X-Frame-Options"))
	}
	for _, p := range []string{"/page/page.js", "/v1/models", inference.LineagePath} {
		res, err := http.Get(f.url + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options: nosniff", p)
		}
	}
}

// smallBuffers is a listener whose connections have small kernel send
// buffers, so that a client that stops reading blocks the server's writes
// soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

// TestAttackSlowReader: a client that asks for a long stream and never
// reads it blocks the server's writes. Past the request's time (and the
// grace to send the rest) the writes fail and the handler gives back its
// generation slot: the next client is answered, not refused as busy for
// ever.
func TestAttackSlowReader(t *testing.T) {
	c := modeltest.TinyConfig()
	c.VocabSize, c.MaxPositionEmbeddings, c.EOSTokenID = 260, 1024, nil
	bm, err := model.New(c, 27)
	if err != nil {
		t.Fatal(err)
	}
	modeltest.Randomise(bm, 27)
	tok, err := tokenizer.NewByte(c.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := inference.NewModel(bm, tok, modelID, engine.NewHost(), 2)
	if err != nil {
		t.Fatal(err)
	}
	s := inference.NewServer(m, inference.Config{MaxConcurrent: 1, MaxQueue: -1, RequestTimeout: time.Second, SendGrace: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(smallBuffers{ln})
	t.Cleanup(func() { hs.Close(); s.Close() })
	url := "http://" + ln.Addr().String()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(1024)
	body := `{"model":"tiny","prompt":"a","max_tokens":1000,"stream":true}`
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	// The stream has the slot; it is never read.
	for s.Active() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	for {
		status, res := post(t, url+"/v1/completions", `{"model":"tiny","prompt":"b","max_tokens":2}`)
		if status == 200 {
			break
		}
		if status != 429 || time.Since(start) > 10*time.Second {
			t.Fatalf("after %v with a client that does not read: %d %s", time.Since(start).Round(time.Millisecond), status, res)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("answered %v after the stalled stream began", time.Since(start).Round(time.Millisecond))
	bg := m.Gen.(*inference.BatcherGenerator)
	for deadline := time.Now().Add(5 * time.Second); s.Active() != 0 || bg.Stats().Active != 0 || bg.Stats().Queued != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests active, batcher %+v: a KV-cache slot or handler leaked", s.Active(), bg.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAttackBundleOverwrite: anyone may send a body someone else sent;
// the node's bundle of the first answer (its audit record) is not replaced
// by the second's: each answer has its own, which checks.
func TestAttackBundleOverwrite(t *testing.T) {
	m, _ := tinyModel(t, 28)
	_, key, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	f := serve(t, m, inference.Config{Receipter: inference.Signer{Key: key, Dir: dir}})
	body := `{"model":"tiny","prompt":"abc","max_tokens":8,"temperature":1}` // no seed: each answer its own
	envs := map[string]bool{}
	for range 3 {
		res, err := http.Post(f.url+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		envs[res.Header.Get(inference.ReceiptHeader)] = true
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("%d bundles for 3 answers to one body: %v", len(files), files)
	}
	for _, p := range files {
		env, b, err := receipt.Parse(must(os.ReadFile(p)))
		if err != nil || b == nil {
			t.Fatalf("%s: %v", p, err)
		}
		if _, err := b.Check(); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if !envs[base64.StdEncoding.EncodeToString(env)] {
			t.Errorf("%s holds a receipt no answer carried", p)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestAttackPathTraversal: the page's file route serves its embedded
// files only, however the path is spelt.
func TestAttackPathTraversal(t *testing.T) {
	m, _ := tinyModel(t, 29)
	f := serve(t, m, inference.Config{AuthToken: "k"})
	for _, p := range []string{"/page/../../go.mod", "/page/%2e%2e/%2e%2e/go.mod", "/page/..%2f..%2fgo.mod", "/page/.%2e/server.go",
		"/page//etc/passwd", "/page/..\\..\\go.mod", "/v1/models/..%2f..%2fmetrics", "/page/%00"} {
		res, err := http.Get(f.url + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == 200 && !strings.Contains(res.Request.URL.Path, "/page/") || strings.Contains(string(b), "module github.com") || strings.Contains(string(b), "package inference") || strings.Contains(string(b), "root:") {
			t.Errorf("GET %s: %d at %s: %.100q", p, res.StatusCode, res.Request.URL.Path, b)
		}
	}
}

// TestAttackDisconnectWhileQueued: a client that leaves while its request
// waits for a slot leaves no waiter behind: the queue is empty again and
// the next request is served.
func TestAttackDisconnectWhileQueued(t *testing.T) {
	m, _ := tinyModel(t, 30)
	m.StopTokens = nil
	g := wrap(m, 20*time.Millisecond)
	f := serve(t, m, inference.Config{MaxConcurrent: 1, MaxQueue: 1})
	ctx := context.Background()
	st := f.client.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: modelID,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("a")}, MaxTokens: openai.Int(15)})
	defer st.Close()
	for g.inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	qctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := f.client.Completions.New(qctx, openai.CompletionNewParams{Model: modelID,
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("b")}, MaxTokens: openai.Int(2)})
		done <- err
	}()
	for f.srv.Active() < 2 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	for st.Next() {
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.srv.Active() != 0 || g.inFlight.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests active, %d generating after the queued client left", f.srv.Active(), g.inFlight.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Two at once again: one generating, one queued (a leaked waiter
	// would make the second a 429).
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, err := f.client.Completions.New(ctx, openai.CompletionNewParams{Model: modelID,
				Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("c")}, MaxTokens: openai.Int(3)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if calls := g.calls.Load(); calls != 3 {
		t.Errorf("%d generations, want 3 (the queued client's never started)", calls)
	}
}

// TestAttackReceiptsDirUnwritable: when the node cannot save a bundle (a
// full or broken receipts folder), the answer still carries its receipt.
func TestAttackReceiptsDirUnwritable(t *testing.T) {
	m, _ := tinyModel(t, 31)
	_, key, _ := ed25519.GenerateKey(nil)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f := serve(t, m, inference.Config{Receipter: inference.Signer{Key: key, Dir: notDir}})
	res, err := http.Post(f.url+"/v1/completions", "application/json", strings.NewReader(`{"model":"tiny","prompt":"abc","max_tokens":3}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	env, _, err := receipt.Parse([]byte(res.Header.Get(inference.ReceiptHeader)))
	if err != nil {
		t.Fatalf("no receipt with the answer: %v", err)
	}
	if _, err := receipt.Verify(env); err != nil {
		t.Fatal(err)
	}
}

// TestAttackFlood: more requests at once than slots and queue hold: the
// rest are refused 429 with Retry-After at once (not held), those admitted
// all finish, and nothing is left running.
func TestAttackFlood(t *testing.T) {
	m, _ := tinyModel(t, 32)
	m.StopTokens = nil
	g := wrap(m, 5*time.Millisecond)
	f := serve(t, m, inference.Config{MaxConcurrent: 2, MaxQueue: 2})
	bg := m.Gen.(*gen).inner.(*inference.BatcherGenerator)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 24 {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", f.url+"/v1/completions", strings.NewReader(`{"model":"tiny","prompt":"a","max_tokens":10,"stream":true}`))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == 429 && res.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			mu.Lock()
			codes[res.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] < 4 || codes[429] == 0 || codes[200]+codes[429] != 24 {
		t.Errorf("answers by status: %v; want at least 4 served, the rest 429", codes)
	}
	if calls := g.calls.Load(); calls != int64(codes[200]) {
		t.Errorf("%d generations for %d answers", calls, codes[200])
	}
	for deadline := time.Now().Add(5 * time.Second); f.srv.Active() != 0 || bg.Stats().Active != 0 || bg.Stats().Queued != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests active, batcher %+v", f.srv.Active(), bg.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAttackDeadlinesLifted: the body and send deadlines of one request do
// not outlive it: a kept-alive connection used again after they passed is
// answered.
func TestAttackDeadlinesLifted(t *testing.T) {
	m, _ := tinyModel(t, 33)
	f := serve(t, m, inference.Config{RequestTimeout: 200 * time.Millisecond, SendGrace: 100 * time.Millisecond, BodyTimeout: 100 * time.Millisecond})
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer hc.CloseIdleConnections()
	fresh := 0 // connections opened
	trace := &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) {
		if !c.Reused {
			fresh++
		}
	}}
	for i := range 3 {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", f.url+"/v1/completions",
			strings.NewReader(`{"model":"tiny","prompt":"a","max_tokens":2}`))
		req.Header.Set("Content-Type", "application/json")
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("request %d on the kept-alive connection: %v", i, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, res.StatusCode)
		}
		time.Sleep(400 * time.Millisecond)
	}
	if fresh != 1 {
		t.Errorf("%d connections for 3 requests kept alive: a deadline outlived its request and broke one", fresh)
	}
}

// TestAttackSwapStorm: models swapped again and again while requests
// arrive: every request is answered by the model it started on (none runs
// on a closed one), every swapped-out model is closed once its requests
// end, and nothing is left running.
func TestAttackSwapStorm(t *testing.T) {
	first, _ := tinyModel(t, 40)
	g0 := wrap(first, time.Millisecond)
	f := serve(t, first, inference.Config{MaxConcurrent: 4, MaxQueue: 64})
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := f.client.Completions.New(ctx, openai.CompletionNewParams{Model: modelID,
					Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("a")}, MaxTokens: openai.Int(3)})
				if err != nil || len(res.Choices) != 1 {
					t.Errorf("during swaps: %v", err)
					return
				}
			}
		})
	}
	gens := []*gen{g0}
	var closed []<-chan error
	for i := range 8 {
		time.Sleep(20 * time.Millisecond)
		m, _ := tinyModel(t, uint64(41+i))
		gens = append(gens, wrap(m, time.Millisecond))
		closed = append(closed, f.srv.Swap(m))
	}
	close(stop)
	wg.Wait()
	for i, c := range closed {
		select {
		case err := <-c:
			if err != nil {
				t.Errorf("model %d closed with %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("model %d never closed: a request kept its reference", i)
		}
	}
	for i, g := range gens[:len(gens)-1] {
		if !g.closed.Load() || g.inFlight.Load() != 0 {
			t.Errorf("swapped-out model %d: closed %v, %d generations running", i, g.closed.Load(), g.inFlight.Load())
		}
	}
	if f.srv.Active() != 0 {
		t.Errorf("%d requests active", f.srv.Active())
	}
}
