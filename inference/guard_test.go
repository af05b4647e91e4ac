package inference_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// apiError returns the code of an OpenAI-style error body.
func apiError(t *testing.T, body string) (code, msg string) {
	t.Helper()
	var e struct {
		Error struct{ Message, Code string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("not an error JSON: %q: %v", body, err)
	}
	return e.Error.Code, e.Error.Message
}

// do sends method path with the given Host and headers.
func do(t *testing.T, f *fixture, method, path, host, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := f.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

// TestGuardContentType: a generation request must declare its body JSON:
// the bodies a browser sends cross-site without asking (forms, text/plain)
// are refused 415 before anything is generated.
func TestGuardContentType(t *testing.T) {
	m, _ := tinyModel(t, 41)
	g := wrap(m, 0)
	f := serve(t, m, inference.Config{})
	body := `{"model":"tiny","prompt":"abc","max_tokens":2}`
	for _, tc := range []struct {
		ct   string
		want int
	}{
		{"", 415},
		{"text/plain", 415},
		{"text/plain; charset=utf-8", 415},
		{"application/x-www-form-urlencoded", 415},
		{"multipart/form-data; boundary=x", 415},
		{"application/json; charset=latin1", 415},
		{"application/json; foo=bar", 415},
		{"application/jsonx", 415},
		{"application/json", 200},
		{"application/json; charset=utf-8", 200},
		{"Application/JSON; charset=UTF-8", 200},
	} {
		for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
			b := body
			if strings.Contains(path, "chat") {
				b = `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`
			}
			before := g.calls.Load()
			var hdr []string
			if tc.ct != "" {
				hdr = []string{"Content-Type", tc.ct}
			}
			status, res, _ := do(t, f, "POST", path, "", b, hdr...)
			if status != tc.want {
				t.Errorf("%s Content-Type %q: %d %s, want %d", path, tc.ct, status, res, tc.want)
				continue
			}
			if tc.want == 415 {
				if code, msg := apiError(t, res); code != "unsupported_media_type" || !strings.Contains(msg, "application/json") {
					t.Errorf("%s Content-Type %q: error %q %q", path, tc.ct, code, msg)
				}
				if g.calls.Load() != before {
					t.Errorf("%s Content-Type %q: generated though refused", path, tc.ct)
				}
			}
		}
	}
}

// TestGuardHost: on a loopback address the node answers its own names
// only: a page of another site whose name resolves to 127.0.0.1 (DNS
// rebinding) is refused 403 on every route, the page included, unless
// the name is allowed.
func TestGuardHost(t *testing.T) {
	m, _ := tinyModel(t, 42)
	f := serve(t, m, inference.Config{AllowHosts: []string{"node.example", "pinned.example:9"}})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(f.url, "http://"))
	gen := `{"model":"tiny","prompt":"abc","max_tokens":2}`
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"localhost:" + port, true},
		{"LOCALHOST:" + port, true},
		{"127.0.0.1:" + port, true},
		{"[::1]:" + port, true},
		{"localhost", true},
		{"node.example", true},
		{"node.example:" + port, true},
		{"pinned.example:9", true},
		{"evil.example:" + port, false},
		{"evil.example", false},
		{"localhost:1", false},
		{"127.0.0.1:1", false},
		{"pinned.example:" + port, false},
		{"localhost.evil.example:" + port, false},
		{"127.0.0.2:" + port, false},
	} {
		for _, r := range []struct{ method, path, body string }{
			{"POST", "/v1/completions", gen}, {"GET", "/v1/models", ""}, {"GET", "/", ""}, {"GET", inference.LineagePath, ""}, {"GET", "/metrics", ""},
		} {
			status, res, _ := do(t, f, r.method, r.path, tc.host, r.body, "Content-Type", "application/json")
			if !tc.want {
				if status != http.StatusForbidden {
					t.Errorf("Host %q %s %s: %d, want 403", tc.host, r.method, r.path, status)
				} else if code, msg := apiError(t, res); code != "host_not_allowed" || !strings.Contains(msg, "--allow-host "+tc.host) {
					t.Errorf("Host %q: error %q %q", tc.host, code, msg)
				}
			} else if status == http.StatusForbidden {
				t.Errorf("Host %q %s %s: refused: %s", tc.host, r.method, r.path, res)
			}
		}
	}
	// "*" allows any name.
	m2, _ := tinyModel(t, 43)
	f2 := serve(t, m2, inference.Config{AllowHosts: []string{"*"}})
	if status, res, _ := do(t, f2, "GET", "/v1/models", "evil.example", ""); status != 200 {
		t.Errorf("--allow-host '*': %d %s", status, res)
	}
}

// TestGuardConnsPerIP: one address holds at most MaxConnsPerIP connections;
// another is answered 429 with Retry-After and closed, and a connection
// closed gives its place back.
func TestGuardConnsPerIP(t *testing.T) {
	m, _ := tinyModel(t, 44)
	f := serve(t, m, inference.Config{MaxConnsPerIP: 2})
	addr := strings.TrimPrefix(f.url, "http://")
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	get := func() (*http.Response, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /v1/models HTTP/1.1\r\nHost: %s\r\n\r\n", addr)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res, nil
	}
	res, err := get()
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" || !res.Close {
		t.Fatalf("third connection: %d Retry-After %q close %v, want 429 with Retry-After, closed", res.StatusCode, res.Header.Get("Retry-After"), res.Close)
	}
	// refused counts the connections that may have met the cap: the
	// third, and each one while the server has not yet seen a close.
	refused := 1
	held[0].Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		res, err := get()
		if err == nil && res.StatusCode == 200 {
			break
		}
		refused++ // 429, or closed before its answer could be read
		if time.Now().After(deadline) {
			t.Fatalf("after one of the two connections closed: %v %v", res, err)
		}
	}
	held[1].Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		status, body, _ := do(t, f, "GET", "/metrics", "", "")
		if status != 200 {
			refused++
		}
		if status == 200 {
			var n int
			if _, err := fmt.Sscanf(body[strings.Index(body, "\nfedtune_inference_connections_over_cap_total ")+1:], "fedtune_inference_connections_over_cap_total %d", &n); err != nil || n < 1 || n > refused {
				t.Errorf("metrics count %d connections over the cap (%v), want 1 to %d:\n%s", n, err, refused, body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %d %s", status, body)
		}
	}
}

// TestGuardHeaderLimit: HTTPServer caps a request's header size.
func TestGuardHeaderLimit(t *testing.T) {
	m, _ := tinyModel(t, 45)
	f := serve(t, m, inference.Config{})
	status, _, _ := do(t, f, "GET", "/v1/models", "", "", "X-Pad", strings.Repeat("a", 200<<10))
	if status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 200 KiB header: %d, want 431", status)
	}
}

// slowTok counts the prompts being tokenized and can hold them.
type slowTok struct {
	tokenizer.Tokenizer
	calls, now, peak atomic.Int64
	hold             chan struct{} // when set, Encode waits on it
}

func (s *slowTok) Encode(text string) []int {
	s.calls.Add(1)
	n := s.now.Add(1)
	defer s.now.Add(-1)
	for p := s.peak.Load(); n > p && !s.peak.CompareAndSwap(p, n); p = s.peak.Load() {
	}
	if s.hold != nil {
		<-s.hold
	}
	return s.Tokenizer.Encode(text)
}

// TestGuardBusyBeforeTokenizing: when every slot and the queue are taken,
// a request is refused 429 before its prompt is tokenized.
func TestGuardBusyBeforeTokenizing(t *testing.T) {
	m, _ := tinyModel(t, 46)
	m.StopTokens = nil
	g := wrap(m, 20*time.Millisecond)
	tok := &slowTok{Tokenizer: m.Tok}
	m.Tok = tok
	f := serve(t, m, inference.Config{MaxConcurrent: 1, MaxQueue: -1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, "POST", f.url+"/v1/completions", strings.NewReader(`{"model":"tiny","prompt":"a","max_tokens":40,"stream":true}`))
		req.Header.Set("Content-Type", "application/json")
		if res, err := f.hc.Do(req); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}()
	for g.inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	before := tok.calls.Load()
	big := strings.Repeat("many words to tokenize ", 20000)
	status, res := post(t, f.url+"/v1/completions", `{"model":"tiny","prompt":"`+big+`","max_tokens":2}`)
	if status != http.StatusTooManyRequests {
		t.Errorf("with the slot taken and no queue: %d %.200s, want 429", status, res)
	}
	if n := tok.calls.Load() - before; n != 0 {
		t.Errorf("a request refused as busy was tokenized (%d Encode calls)", n)
	}
	cancel()
	<-done
}

// TestGuardPreparingLimit: at most MaxPreparing prompts are tokenized at
// once, however many requests arrive.
func TestGuardPreparingLimit(t *testing.T) {
	m, _ := tinyModel(t, 47)
	tok := &slowTok{Tokenizer: m.Tok, hold: make(chan struct{})}
	m.Tok = tok
	f := serve(t, m, inference.Config{MaxPreparing: 2, MaxConcurrent: 8, MaxQueue: 16})
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	for range 8 {
		wg.Go(func() {
			status, _ := post(t, f.url+"/v1/completions", `{"model":"tiny","prompt":"abc","max_tokens":2}`)
			codes <- status
		})
	}
	for tok.now.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the other requests have arrived and wait
	if p := tok.peak.Load(); p != 2 {
		t.Errorf("%d prompts tokenized at once, want MaxPreparing 2", p)
	}
	if _, body, _ := do(t, f, "GET", "/metrics", "", ""); !strings.Contains(body, "fedtune_inference_preparing_requests 2\n") {
		t.Errorf("metrics do not show 2 requests preparing:\n%s", body)
	}
	close(tok.hold)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("status %d, want 200", c)
		}
	}
	if p := tok.peak.Load(); p > 2 {
		t.Errorf("%d prompts tokenized at once, want at most 2", p)
	}
}
