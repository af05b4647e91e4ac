package inference

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/strictjson"
)

// Endpoint is the kind of a generation request.
type Endpoint int

// The generation endpoints.
const (
	Completions     Endpoint = iota // POST /v1/completions
	ChatCompletions                 // POST /v1/chat/completions
)

// Request is a decoded /v1/completions or /v1/chat/completions request.
// Fields OpenAI's API has and this server does not use are ignored.
type Request struct {
	Model        string
	Prompt       string        // completions: the prompt text (PromptTokens unset)
	PromptTokens []int         // completions: the prompt as token ids
	Messages     []ChatMessage // chat: the conversation
	MaxTokens    int           // 0 = not given
	Temperature  float64       // default 1
	TopP         float64       // default 1
	Seed         *int64        // nil = not given
	Stop         []string      // stop sequences (at most 4)
	Stream       bool
	IncludeUsage bool // stream_options.include_usage
}

// wire is the JSON of both endpoints.
type wire struct {
	Model               string          `json:"model"`
	Prompt              json.RawMessage `json:"prompt"`
	Messages            json.RawMessage `json:"messages"`
	MaxTokens           *float64        `json:"max_tokens"`
	MaxCompletionTokens *float64        `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Seed                *float64        `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	N                   *float64        `json:"n"`
	Stream              *bool           `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	Unsupported
}

// Unsupported holds the parameters of OpenAI's API that change what is
// generated and that this server does not implement: a request that sets
// one to anything but its default is refused rather than answered (and
// signed) as if it had not asked.
type Unsupported struct {
	LogitBias        map[string]float64 `json:"logit_bias"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	Logprobs         json.RawMessage    `json:"logprobs"` // chat: a bool; completions: an int
	TopLogprobs      *float64           `json:"top_logprobs"`
	BestOf           *float64           `json:"best_of"`
	Echo             *bool              `json:"echo"`
	Suffix           *string            `json:"suffix"`
	ResponseFormat   *struct {
		Type string `json:"type"`
	} `json:"response_format"`
	Tools        json.RawMessage `json:"tools"`
	ToolChoice   json.RawMessage `json:"tool_choice"`
	Functions    json.RawMessage `json:"functions"`
	FunctionCall json.RawMessage `json:"function_call"`
}

// checkUnsupported refuses an Unsupported parameter set to other than its
// default.
func checkUnsupported(u Unsupported) *APIError {
	notSupported := func(param, what string) *APIError {
		return badRequest(param, "unsupported_parameter", fmt.Sprintf("%s is not supported by this server (%s); leave it out", param, what))
	}
	isEmpty := func(raw json.RawMessage) bool {
		t := bytes.TrimSpace(raw)
		return isNull(raw) || string(t) == "[]" || string(t) == "false" || string(t) == "0" || string(t) == `"none"`
	}
	switch {
	case len(u.LogitBias) > 0:
		return notSupported("logit_bias", "the logits are not biased")
	case u.FrequencyPenalty != nil && *u.FrequencyPenalty != 0:
		return notSupported("frequency_penalty", "no penalty is applied")
	case u.PresencePenalty != nil && *u.PresencePenalty != 0:
		return notSupported("presence_penalty", "no penalty is applied")
	case !isEmpty(u.Logprobs):
		return notSupported("logprobs", "no log probabilities are returned")
	case u.TopLogprobs != nil && *u.TopLogprobs != 0:
		return notSupported("top_logprobs", "no log probabilities are returned")
	case u.BestOf != nil && *u.BestOf != 1:
		return notSupported("best_of", "one answer is generated")
	case u.Echo != nil && *u.Echo:
		return notSupported("echo", "the prompt is not echoed")
	case u.Suffix != nil && *u.Suffix != "":
		return notSupported("suffix", "no text is inserted")
	case u.ResponseFormat != nil && u.ResponseFormat.Type != "" && u.ResponseFormat.Type != "text":
		return notSupported("response_format", "answers are plain text")
	case !isEmpty(u.Tools):
		return notSupported("tools", "no tool calls")
	case !isEmpty(u.ToolChoice):
		return notSupported("tool_choice", "no tool calls")
	case !isEmpty(u.Functions):
		return notSupported("functions", "no function calls")
	case !isEmpty(u.FunctionCall):
		return notSupported("function_call", "no function calls")
	}
	return nil
}

// knownNames is every member name a request's JSON is read for.
var knownNames = func() []string {
	names := []string{"include_usage", "role", "content", "type", "text"}
	for _, t := range []reflect.Type{reflect.TypeFor[wire](), reflect.TypeFor[Unsupported]()} {
		for i := range t.NumField() {
			if n, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); n != "" {
				names = append(names, n)
			}
		}
	}
	return names
}()

// readObject reports whether the object at JSON pointer ptr is one whose
// members DecodeRequest reads: the top level, stream_options,
// response_format, a message, a message's content part.
func readObject(ptr string) bool {
	switch ptr {
	case "", "/stream_options", "/response_format":
		return true
	}
	rest, ok := strings.CutPrefix(ptr, "/messages/")
	if !ok {
		return false
	}
	i, part, hasPart := strings.Cut(rest, "/content/")
	isIndex := func(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
	return isIndex(i) && (!hasPart || isIndex(part))
}

// checkReadable refuses a body that readers could read two ways, since
// the receipt of its answer signs its bytes: invalid UTF-8 (which
// encoding/json replaces and others refuse), an object with two members
// of the same name or names equal up to case (encoding/json keeps the
// last, others the first), and a name that is one this server reads but
// for case, such as "PROMPT" (encoding/json matches names without regard
// to case, other readers see no prompt).
func checkReadable(body []byte) *APIError {
	if !utf8.Valid(body) {
		return badRequest("", "invalid_json", "the request body is not valid UTF-8")
	}
	if err := strictjson.CheckNames(body); err != nil {
		return badRequest("", "invalid_json", "the request body can be read two ways: "+err.Error())
	}
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.ReadToken()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return badRequest("", "invalid_json", "the request body is not valid JSON: "+err.Error())
		}
		// An object member's name: a string read where the stack says a
		// name comes next.
		if tok.Kind() != '"' {
			continue
		}
		if k, n := dec.StackIndex(dec.StackDepth()); k != '{' || n%2 != 1 {
			continue
		}
		ptr := string(dec.StackPointer())
		name := tok.String()
		if !readObject(ptr[:strings.LastIndexByte(ptr, '/')]) {
			continue // a free-form object such as metadata
		}
		for _, known := range knownNames {
			if name != known && strings.EqualFold(name, known) {
				return badRequest(name, "invalid_json", fmt.Sprintf("member %q at %s: names are case-sensitive (did you mean %q?)",
					name, dec.StackPointer(), known))
			}
		}
	}
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// intField checks that a JSON number is an integer in [lo, hi].
func intField(name string, v *float64, lo, hi float64) (int64, *APIError) {
	if *v != math.Trunc(*v) || *v < lo || *v > hi {
		return 0, badRequest(name, "invalid_value", fmt.Sprintf("%s must be an integer in [%g, %g], got %g", name, lo, hi, *v))
	}
	return int64(*v), nil
}

// DecodeRequest decodes the body of a request to endpoint e. Its error is
// the 400 answer to give.
func DecodeRequest(e Endpoint, body []byte) (*Request, *APIError) {
	var w wire
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, badRequest("", "invalid_json", "the request body is not valid JSON for this endpoint: "+err.Error())
	}
	if err := checkReadable(body); err != nil {
		return nil, err
	}
	if err := checkUnsupported(w.Unsupported); err != nil {
		return nil, err
	}
	r := &Request{Model: w.Model, Temperature: 1, TopP: 1}
	if w.Model == "" {
		return nil, badRequest("model", "missing_required_parameter", "you must provide a model parameter")
	}
	// A body with both a prompt and messages would read as either kind
	// of request, and its receipt does not say which endpoint answered.
	switch e {
	case Completions:
		if !isNull(w.Messages) {
			return nil, badRequest("messages", "invalid_value", "messages is for /v1/chat/completions; /v1/completions takes a prompt")
		}
		if err := decodePrompt(r, w.Prompt); err != nil {
			return nil, err
		}
	case ChatCompletions:
		if !isNull(w.Prompt) {
			return nil, badRequest("prompt", "invalid_value", "prompt is for /v1/completions; /v1/chat/completions takes messages")
		}
		if err := decodeMessages(r, w.Messages); err != nil {
			return nil, err
		}
	}
	mt := w.MaxTokens
	name := "max_tokens"
	if w.MaxCompletionTokens != nil {
		// Both, apart, would leave the reader to guess which was obeyed.
		if w.MaxTokens != nil && *w.MaxTokens != *w.MaxCompletionTokens {
			return nil, badRequest("max_completion_tokens", "invalid_value", fmt.Sprintf(
				"max_tokens %g and max_completion_tokens %g differ: give one of them", *w.MaxTokens, *w.MaxCompletionTokens))
		}
		mt, name = w.MaxCompletionTokens, "max_completion_tokens"
	}
	if mt != nil {
		v, err := intField(name, mt, 1, math.MaxInt32)
		if err != nil {
			return nil, err
		}
		r.MaxTokens = int(v)
	}
	if w.Temperature != nil {
		if t := *w.Temperature; !(t >= 0 && t <= 2) {
			return nil, badRequest("temperature", "invalid_value", fmt.Sprintf("temperature must be in [0, 2], got %g", t))
		}
		r.Temperature = *w.Temperature
	}
	if w.TopP != nil {
		if p := *w.TopP; !(p > 0 && p <= 1) {
			return nil, badRequest("top_p", "invalid_value", fmt.Sprintf("top_p must be in (0, 1], got %g", p))
		}
		r.TopP = *w.TopP
	}
	if w.Seed != nil {
		v, err := intField("seed", w.Seed, -(1 << 53), 1<<53)
		if err != nil {
			return nil, err
		}
		r.Seed = &v
	}
	if w.N != nil {
		if *w.N != 1 {
			return nil, badRequest("n", "invalid_value", fmt.Sprintf("only n = 1 is supported, got %g", *w.N))
		}
	}
	if !isNull(w.Stop) {
		var one string
		if err := json.Unmarshal(w.Stop, &one); err == nil {
			r.Stop = []string{one}
		} else if err := json.Unmarshal(w.Stop, &r.Stop); err != nil {
			return nil, badRequest("stop", "invalid_type", "stop must be a string or a list of strings")
		}
		if len(r.Stop) > 4 {
			return nil, badRequest("stop", "invalid_value", fmt.Sprintf("stop takes at most 4 sequences, got %d", len(r.Stop)))
		}
		for i, s := range r.Stop {
			if s == "" {
				return nil, badRequest("stop", "invalid_value", "a stop sequence is empty")
			}
			// A receipt records the stop sequences (receipt.MaxStopLen
			// each), and each one is searched for after every token.
			if len(s) > receipt.MaxStopLen {
				return nil, badRequest("stop", "invalid_value", fmt.Sprintf("stop sequence %d is %d bytes, at most %d", i, len(s), receipt.MaxStopLen))
			}
		}
	}
	if w.Stream != nil {
		r.Stream = *w.Stream
	}
	if w.StreamOptions != nil {
		if !r.Stream {
			return nil, badRequest("stream_options", "invalid_value", "stream_options is only allowed when stream is true")
		}
		if w.StreamOptions.IncludeUsage != nil {
			r.IncludeUsage = *w.StreamOptions.IncludeUsage
		}
	}
	return r, nil
}

// decodePrompt reads a completions prompt: a string, a list of one string,
// a list of token ids, or a list of one list of token ids.
func decodePrompt(r *Request, raw json.RawMessage) *APIError {
	if isNull(raw) {
		return badRequest("prompt", "missing_required_parameter", "you must provide a prompt")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		r.Prompt = s
		return nil
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil {
		if len(ss) != 1 {
			return badRequest("prompt", "invalid_value", fmt.Sprintf("only one prompt per request is supported, got %d", len(ss)))
		}
		r.Prompt = ss[0]
		return nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		if len(ids) == 0 {
			return badRequest("prompt", "invalid_value", "the prompt is empty")
		}
		r.PromptTokens = ids
		return nil
	}
	var idss [][]int
	if json.Unmarshal(raw, &idss) == nil {
		if len(idss) != 1 || len(idss[0]) == 0 {
			return badRequest("prompt", "invalid_value", "only one non-empty prompt per request is supported")
		}
		r.PromptTokens = idss[0]
		return nil
	}
	return badRequest("prompt", "invalid_type", "prompt must be a string, a list of one string, or token ids")
}

// decodeMessages reads chat messages: each a role and a content that is a
// string or a list of text parts.
func decodeMessages(r *Request, raw json.RawMessage) *APIError {
	if isNull(raw) {
		return badRequest("messages", "missing_required_parameter", "you must provide messages")
	}
	var msgs []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(raw, &msgs); err != nil {
		return badRequest("messages", "invalid_type", "messages must be a list of {role, content} objects")
	}
	if len(msgs) == 0 {
		return badRequest("messages", "invalid_value", "messages is empty")
	}
	for i, m := range msgs {
		param := fmt.Sprintf("messages[%d]", i)
		switch m.Role {
		case "system", "developer", "user", "assistant", "tool":
		default:
			return badRequest(param+".role", "invalid_value", fmt.Sprintf("%s.role %q is not one of system, developer, user, assistant, tool", param, m.Role))
		}
		cm := ChatMessage{Role: m.Role}
		var s string
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		switch {
		case isNull(m.Content):
			if m.Role != "assistant" {
				return badRequest(param+".content", "missing_required_parameter", param+" has no content")
			}
		case json.Unmarshal(m.Content, &s) == nil:
			cm.Content = s
		case json.Unmarshal(m.Content, &parts) == nil:
			for _, p := range parts {
				if p.Type != "text" {
					return badRequest(param+".content", "invalid_value", fmt.Sprintf("content part type %q is not supported (only text)", p.Type))
				}
				cm.Content += p.Text
			}
		default:
			return badRequest(param+".content", "invalid_type", param+".content must be a string or a list of text parts")
		}
		r.Messages = append(r.Messages, cm)
	}
	return nil
}
