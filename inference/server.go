package inference

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config sets a Server's limits and hooks. Zero values take the defaults.
type Config struct {
	MaxBodyBytes     int64         // request body size at most (default 1 MiB); larger: 413
	MaxConcurrent    int           // requests generating at once (default 4)
	MaxQueue         int           // requests waiting for a slot at most (default 64); more: 429
	RequestTimeout   time.Duration // a request's time at most, queue included (default 5 minutes)
	BodyTimeout      time.Duration // time to receive a request's body at most (default 30s); slower: 408
	SendGrace        time.Duration // after RequestTimeout, time to send the rest of the answer at most (default 10s)
	DefaultMaxTokens int           // max_tokens when a request gives none (default 256; capped by the context)
	AuthToken        string        // when set, /v1/ requests need "Authorization: Bearer AuthToken"
	Receipter        Receipter     // default NoReceipts
	Logger           *slog.Logger  // default slog.Default()
}

func (c *Config) defaults() {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 4
	}
	if c.MaxQueue < 0 {
		c.MaxQueue = 0
	} else if c.MaxQueue == 0 {
		c.MaxQueue = 64
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Minute
	}
	if c.SendGrace <= 0 {
		c.SendGrace = 10 * time.Second
	}
	if c.BodyTimeout <= 0 {
		c.BodyTimeout = 30 * time.Second
	}
	if c.DefaultMaxTokens <= 0 {
		c.DefaultMaxTokens = 256
	}
	if c.Receipter == nil {
		c.Receipter = NoReceipts{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server answers OpenAI's API with one served Model at a time.
type Server struct {
	cfg     Config
	log     *slog.Logger
	met     *metrics
	slots   chan struct{} // one per generating request
	waiting atomic.Int64  // requests waiting for a slot
	running atomic.Int64  // requests inside a generation handler

	mu  sync.RWMutex // guards cur against Swap while a request takes a reference
	cur *Model
}

// NewServer serves m under cfg.
func NewServer(m *Model, cfg Config) *Server {
	cfg.defaults()
	return &Server{cfg: cfg, log: cfg.Logger, met: newMetrics(), slots: make(chan struct{}, cfg.MaxConcurrent), cur: m}
}

// Model returns the model served now.
func (s *Server) Model() *Model {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

// acquire returns the served model with a reference the caller releases
// with m.refs.Done.
func (s *Server) acquire() *Model {
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.cur.refs.Add(1)
	return s.cur
}

// Swap serves m from now on. Requests already running finish on the model
// they started on; it is closed when the last of them ends, and the
// returned channel then receives its Close error.
func (s *Server) Swap(m *Model) <-chan error {
	s.mu.Lock()
	old := s.cur
	s.cur = m
	s.mu.Unlock()
	s.met.swaps.Inc()
	s.log.Info("model swapped", "from", old.ID, "from_digest", old.Digest, "to", m.ID, "to_digest", m.Digest)
	done := make(chan error, 1)
	go func() {
		old.refs.Wait()
		done <- old.Gen.Close()
	}()
	return done
}

// Close closes the served model once no request runs on it; the caller
// stops the HTTP server first.
func (s *Server) Close() error {
	m := s.Model()
	m.refs.Wait()
	return m.Gen.Close()
}

// Active returns the number of generation requests being handled (waiting
// or generating).
func (s *Server) Active() int { return int(s.running.Load()) }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("/v1/models", s.api("/v1/models", s.models))
	mux.Handle("/v1/models/{id}", s.api("/v1/models", s.models))
	mux.Handle("/v1/completions", s.api("/v1/completions", s.generate(Completions)))
	mux.Handle("/v1/chat/completions", s.api("/v1/chat/completions", s.generate(ChatCompletions)))
	mux.Handle(LineagePath, s.api(LineagePath, s.lineage))
	mux.Handle("GET /{$}", pageIndex())
	mux.Handle("GET /page/", pageAssets())
	mux.Handle("/v1/", s.api("other", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url",
			Message: fmt.Sprintf("unknown request URL: %s %s", r.Method, r.URL.Path)})
	}))
	return mux
}

// statusWriter records the status a handler answers.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// api wraps an API handler with auth, metrics and a log line.
func (s *Server) api(endpoint string, h http.HandlerFunc) http.Handler {
	var want [32]byte
	if s.cfg.AuthToken != "" {
		want = sha256.Sum256([]byte(s.cfg.AuthToken))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		// The refusal is this request's alone: h, shared by every request
		// to the endpoint, is never changed.
		authorized := true
		if s.cfg.AuthToken != "" {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			got := sha256.Sum256([]byte(tok))
			if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				writeError(sw, &APIError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
					Message: "missing or incorrect API key: send Authorization: Bearer TOKEN"})
				authorized = false
			}
		}
		if authorized {
			h(sw, r)
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		s.met.requests.WithLabelValues(endpoint, fmt.Sprint(code)).Inc()
		s.met.duration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
		s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", code,
			"duration", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
	})
}

// modelObject is OpenAI's model object.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, &APIError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "use GET " + r.URL.Path})
		return
	}
	m := s.Model()
	obj := modelObject{ID: m.ID, Object: "model", Created: m.Created.Unix(), OwnedBy: "fedtune"}
	if id := r.PathValue("id"); id != "" {
		if id != m.ID {
			writeError(w, modelNotFound(id, m.ID))
			return
		}
		writeJSON(w, http.StatusOK, obj)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{"list", []modelObject{obj}})
}

// modelNotFound is OpenAI's answer for an unknown model, naming the model
// this node serves so that a client can correct its request.
func modelNotFound(id, served string) *APIError {
	return &APIError{Status: http.StatusNotFound, Type: "invalid_request_error", Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("the model %q does not exist or you do not have access to it; this node serves %q (GET /v1/models)", id, served)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, serverError("encoding the answer: "+err.Error()))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// admit waits for a generation slot; release gives it back.
func (s *Server) admit(ctx context.Context) (release func(), e *APIError) {
	select {
	case s.slots <- struct{}{}:
	default:
		if s.waiting.Add(1) > int64(s.cfg.MaxQueue) {
			s.waiting.Add(-1)
			return nil, &APIError{Status: http.StatusTooManyRequests, Type: "requests", Code: "rate_limit_exceeded",
				Message: fmt.Sprintf("the server is busy: %d requests generating and %d waiting; retry later", s.cfg.MaxConcurrent, s.cfg.MaxQueue)}
		}
		s.met.queue.Inc()
		defer func() { s.waiting.Add(-1); s.met.queue.Dec() }()
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, &APIError{Status: http.StatusTooManyRequests, Type: "requests", Code: "rate_limit_exceeded",
				Message: "timed out waiting for a generation slot; retry later"}
		}
	}
	s.met.active.Inc()
	return func() { s.met.active.Dec(); <-s.slots }, nil
}

// job is one generation request being answered.
type job struct {
	s       *Server
	e       Endpoint
	req     *Request
	m       *Model
	body    []byte
	id      string
	created int64
	prompt  []int
	params  Params
	start   time.Time
}

func (s *Server) generate(e Endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.running.Add(1)
		defer s.running.Add(-1)
		start := time.Now()
		if r.Method != http.MethodPost {
			writeError(w, &APIError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
				Message: "use POST " + r.URL.Path})
			return
		}
		// A client that sends its headers and then stalls its body is cut
		// at BodyTimeout; the deadline is lifted once the body is in, so
		// that the connection's watch for a client that goes away does
		// not end a long answer.
		rc := http.NewResponseController(w)
		deadlineSet := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) == nil
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
		if deadlineSet {
			rc.SetReadDeadline(time.Time{})
		}
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				w.Header().Set("Connection", "close")
				writeError(w, &APIError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "request_timeout",
					Message: fmt.Sprintf("the request body did not arrive within %v", s.cfg.BodyTimeout)})
				return
			}
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				writeError(w, &APIError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
					Message: fmt.Sprintf("the request body is larger than %d bytes", s.cfg.MaxBodyBytes)})
				return
			}
			writeError(w, badRequest("", "", "reading the request body: "+err.Error()))
			return
		}
		req, apiErr := DecodeRequest(e, body)
		if apiErr != nil {
			writeError(w, apiErr)
			return
		}
		m := s.acquire()
		defer m.refs.Done()
		if req.Model != m.ID {
			writeError(w, modelNotFound(req.Model, m.ID))
			return
		}
		j := &job{s: s, e: e, req: req, m: m, body: body, created: start.Unix(), start: start}
		if apiErr := j.prepare(); apiErr != nil {
			writeError(w, apiErr)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		// A client that stops reading blocks the answer's writes, which no
		// context ends: past the request's time and SendGrace they fail,
		// so that the handler returns its generation slot and its
		// reference to the model (which a swap waits on to close it). The
		// deadline also covers the flush net/http does after the handler;
		// net/http lifts it then, before the connection's next request.
		rc.SetWriteDeadline(start.Add(s.cfg.RequestTimeout + s.cfg.SendGrace))
		release, apiErr := s.admit(ctx)
		if apiErr != nil {
			writeError(w, apiErr)
			return
		}
		defer release()
		s.met.promptTokens.Add(float64(len(j.prompt)))
		if req.Stream {
			j.stream(ctx, r.Context(), w)
		} else {
			j.whole(ctx, r.Context(), w)
		}
	}
}

// prepare tokenizes the prompt and sets the sampling parameters.
func (j *job) prepare() *APIError {
	m, req := j.m, j.req
	var text string
	switch j.e {
	case Completions:
		j.id = "cmpl-" + randomID()
		text = req.Prompt
	case ChatCompletions:
		j.id = "chatcmpl-" + randomID()
		ct := m.Chat
		if ct == nil {
			ct = PlainChat{}
		}
		var err error
		if text, err = ct.Render(req.Messages); err != nil {
			return badRequest("messages", "invalid_value", "the model's chat template refused the messages: "+err.Error())
		}
	}
	if req.PromptTokens != nil {
		V := m.Tok.VocabSize()
		for i, id := range req.PromptTokens {
			if id < 0 || id >= V {
				return badRequest("prompt", "invalid_value", fmt.Sprintf("prompt token %d is %d, outside the vocabulary [0, %d)", i, id, V))
			}
		}
		j.prompt = req.PromptTokens
	} else {
		j.prompt = m.Tok.Encode(text)
		if m.BOS != nil && (j.e == Completions || isPlain(m.Chat)) {
			j.prompt = append([]int{*m.BOS}, j.prompt...)
		}
	}
	if len(j.prompt) == 0 {
		return badRequest("prompt", "invalid_value", "the prompt is empty")
	}
	room := m.Context - len(j.prompt)
	mt := req.MaxTokens
	if mt == 0 {
		mt = min(j.s.cfg.DefaultMaxTokens, room)
	}
	if mt <= 0 || len(j.prompt)+mt > m.Context {
		param := "prompt"
		if j.e == ChatCompletions {
			param = "messages"
		}
		return badRequest(param, "context_length_exceeded", fmt.Sprintf(
			"this model's maximum context length is %d tokens; the request has %d prompt tokens and asks for %d more (max_tokens)",
			m.Context, len(j.prompt), max(mt, 1)))
	}
	seed := uint64(0)
	if req.Seed != nil {
		seed = uint64(*req.Seed)
	} else {
		var b [8]byte
		rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	j.params = Params{MaxTokens: mt, Temperature: req.Temperature, TopP: req.TopP, Seed: seed, StopTokens: m.StopTokens}
	return nil
}

// isPlain reports whether ct is the plain form, whose text holds no
// special tokens (a model's own template writes its BOS token itself).
func isPlain(ct ChatTemplate) bool {
	switch ct.(type) {
	case nil, PlainChat, *PlainChat:
		return true
	}
	return false
}

func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// outcome is how a generation ended.
type outcome struct {
	tokens []int
	finish string // "stop" or "length"
	err    error  // a failure of the generator (not the request's end)
	gone   bool   // the client went away
	cut    bool   // the request's time limit ended it
}

// run generates, handing each text piece to emit (false stops).
func (j *job) run(ctx, client context.Context, emit func(piece string) bool) outcome {
	ts := &textStream{tok: j.m.Tok, stop: j.req.Stop}
	var o outcome
	var first, last time.Time
	stopped := false
	err := j.m.Gen.Generate(ctx, j.prompt, j.params, func(tok int) bool {
		last = time.Now()
		if first.IsZero() {
			first = last
			j.s.met.ttft.Observe(first.Sub(j.start).Seconds())
		}
		o.tokens = append(o.tokens, tok)
		j.s.met.genTokens.Inc()
		piece, stop := ts.add(tok)
		if piece != "" && !emit(piece) {
			o.gone = true
			return false
		}
		if stop {
			stopped = true
			return false
		}
		return true
	})
	if n := len(o.tokens); n > 1 {
		if d := last.Sub(first).Seconds(); d > 0 {
			j.s.met.tokensPerSec.Observe(float64(n-1) / d)
		}
	}
	switch {
	case o.gone || client.Err() != nil:
		o.gone = true
		return o
	case err != nil && ctx.Err() != nil:
		j.s.log.Warn("request time limit reached: answer cut", "id", j.id, "tokens", len(o.tokens), "limit", j.s.cfg.RequestTimeout)
		o.finish, o.cut = "length", true
	case err != nil:
		o.err = err
		return o
	case stopped:
		o.finish = "stop"
	case len(o.tokens) < j.params.MaxTokens:
		o.finish = "stop" // a stop token
	default:
		o.finish = "length"
	}
	if rest := ts.flush(); rest != "" && !emit(rest) {
		o.gone = true
	}
	return o
}

// usage is OpenAI's usage object.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (j *job) usage(o outcome) *usage {
	return &usage{len(j.prompt), len(o.tokens), len(j.prompt) + len(o.tokens)}
}

// receipt asks the Receipter for the receipt of the answer o with text
// (nil for none).
func (j *job) receipt(ctx context.Context, o outcome, text string) json.RawMessage {
	rc, err := j.s.cfg.Receipter.Receipt(ctx, ReceiptRequest{ModelID: j.m.ID, ModelDigest: j.m.Digest, AdapterDigest: j.m.Adapter, TokenizerDigest: j.m.Tokenizer,
		Block: j.m.Block, Request: j.body, Prompt: j.prompt, Tokens: o.tokens, Params: j.params, Stop: j.req.Stop,
		Response: text, TimeCut: o.cut, Time: time.Now().UTC()})
	if err != nil {
		j.s.log.Error("receipt failed", "id", j.id, "err", err, "receipt_sent", len(rc) > 0)
	}
	if len(rc) == 0 {
		return nil
	}
	return rc
}

type message struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type choice struct {
	Index        int       `json:"index"`
	Text         *string   `json:"text,omitempty"`
	Message      *message  `json:"message,omitempty"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

type completion struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []choice        `json:"choices"`
	Usage   *usage          `json:"usage"`
	Receipt json.RawMessage `json:"receipt,omitempty"`
}

// whole answers a non-streamed request.
func (j *job) whole(ctx, client context.Context, w http.ResponseWriter) {
	var text strings.Builder
	o := j.run(ctx, client, func(p string) bool { text.WriteString(p); return true })
	if o.gone {
		j.s.log.Info("client went away", "id", j.id, "tokens", len(o.tokens))
		return
	}
	if o.err != nil {
		j.s.log.Error("generation failed", "id", j.id, "err", o.err)
		writeError(w, serverError("generation failed: "+o.err.Error()))
		return
	}
	c := completion{ID: j.id, Created: j.created, Model: j.m.ID, Usage: j.usage(o)}
	t := text.String()
	switch j.e {
	case Completions:
		c.Object = "text_completion"
		c.Choices = []choice{{Text: &t, FinishReason: o.finish}}
	case ChatCompletions:
		c.Object = "chat.completion"
		c.Choices = []choice{{Message: &message{Role: "assistant", Content: t}, FinishReason: o.finish}}
	}
	if rc := j.receipt(ctx, o, t); rc != nil {
		c.Receipt = rc
		w.Header().Set(ReceiptHeader, base64.StdEncoding.EncodeToString(rc))
	}
	writeJSON(w, http.StatusOK, c)
	j.s.log.Info("answered", "id", j.id, "model", j.m.ID, "prompt_tokens", len(j.prompt), "tokens", len(o.tokens),
		"finish", o.finish, "duration", time.Since(j.start).Round(time.Microsecond))
}

type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        *delta    `json:"delta,omitempty"`
	Text         *string   `json:"text,omitempty"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chunk struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []chunkChoice   `json:"choices"`
	Usage   any             `json:"usage,omitempty"` // *usage; null on the others when include_usage
	Receipt json.RawMessage `json:"receipt,omitempty"`
}

// stream answers a streamed request with server-sent events.
func (j *job) stream(ctx, client context.Context, w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Trailer", ReceiptHeader)
	w.WriteHeader(http.StatusOK)
	object := "text_completion"
	if j.e == ChatCompletions {
		object = "chat.completion.chunk"
	}
	send := func(c chunk) bool {
		c.ID, c.Object, c.Created, c.Model = j.id, object, j.created, j.m.ID
		if c.Usage == nil && j.req.IncludeUsage {
			c.Usage = json.RawMessage("null")
		}
		b, err := json.Marshal(c)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	piece := func(p string, finish *string) chunkChoice {
		if j.e == ChatCompletions {
			d := &delta{}
			if finish == nil {
				d.Content = &p
			}
			return chunkChoice{Delta: d, FinishReason: finish}
		}
		return chunkChoice{Text: &p, FinishReason: finish}
	}
	if j.e == ChatCompletions {
		empty := ""
		if !send(chunk{Choices: []chunkChoice{{Delta: &delta{Role: "assistant", Content: &empty}}}}) {
			return
		}
	}
	var text strings.Builder
	o := j.run(ctx, client, func(p string) bool {
		text.WriteString(p)
		return send(chunk{Choices: []chunkChoice{piece(p, nil)}})
	})
	if o.gone {
		j.s.log.Info("client went away mid-stream", "id", j.id, "tokens", len(o.tokens))
		return
	}
	if o.err != nil {
		j.s.log.Error("generation failed mid-stream", "id", j.id, "err", o.err)
		b, _ := serverError("generation failed: " + o.err.Error()).MarshalJSON()
		fmt.Fprintf(w, "data: %s\n\n", b)
		rc.Flush()
		return
	}
	receipt := j.receipt(ctx, o, text.String())
	last := chunk{Choices: []chunkChoice{piece("", &o.finish)}}
	if j.req.IncludeUsage {
		if !send(last) {
			return
		}
		last = chunk{Choices: []chunkChoice{}, Usage: j.usage(o)}
	}
	last.Receipt = receipt
	if !send(last) {
		return
	}
	if receipt != nil {
		h.Set(ReceiptHeader, base64.StdEncoding.EncodeToString(receipt))
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	rc.Flush()
	j.s.log.Info("answered", "id", j.id, "model", j.m.ID, "prompt_tokens", len(j.prompt), "tokens", len(o.tokens),
		"finish", o.finish, "stream", true, "duration", time.Since(j.start).Round(time.Microsecond))
}
