package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fedtune/fedtune/model/chat/internal/jinja"
)

// ConfigFileName is the file of a model folder that holds the chat template.
const ConfigFileName = "tokenizer_config.json"

// DefaultName is the name of the template taken from a list of named
// templates when Options do not name one.
const DefaultName = "default"

// ErrNoTemplate is returned when a tokenizer config has no chat template.
var ErrNoTemplate = errors.New("chat: no chat_template")

// ErrConfig is returned for a tokenizer config or template that cannot be
// used.
var ErrConfig = errors.New("chat: bad chat template")

// Limits bound the work of one render of a chat template (steps, output
// bytes, bytes built, nesting depth); a zero field takes DefaultLimits'.
// A template ships inside a published checkpoint, so whoever published it
// chooses the code a node runs: every render is bounded, and a render that
// reaches a limit fails with a *LimitError naming it.
type Limits = jinja.Limits

// LimitError is a render stopped by one of its Limits; its Limit field
// names which ("steps", "output", "alloc", "depth", "parse depth",
// "range", "build").
type LimitError = jinja.LimitError

// DefaultLimits are the limits of a render whose Options give none: far
// above what any published template needs for a long conversation.
var DefaultLimits = jinja.DefaultLimits

// MaxSourceBytes bounds a chat template's source.
const MaxSourceBytes = 1 << 20

// probe is the conversation Parse renders a template with, under its
// limits, so a template that runs away is refused when a model is loaded
// or imported rather than on its first request.
var probe = []Message{
	{Role: "system", Content: "You are a helpful assistant."},
	{Role: "user", Content: "Hello."},
	{Role: "assistant", Content: "Hello! How can I help?"},
	{Role: "user", Content: "What is 2 + 2?"},
}

// specialTokenKeys are the tokenizer_config.json fields transformers puts in
// special_tokens_map (SPECIAL_TOKENS_ATTRIBUTES, less the list handled
// apart).
var specialTokenKeys = []string{
	"bos_token", "eos_token", "unk_token", "sep_token",
	"pad_token", "cls_token", "mask_token",
}

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Options control one render.
type Options struct {
	// AddGenerationPrompt asks the template to end with the header that
	// opens an assistant turn.
	AddGenerationPrompt bool
	// Now is the time strftime_now formats; zero means the wall clock.
	Now time.Time
	// Vars are further template variables (date_string, tools, …). They
	// override the special tokens but not messages or
	// add_generation_prompt.
	Vars map[string]any
	// Limits bound the render; zero fields take DefaultLimits'.
	Limits Limits
}

// Template is a compiled chat template with the special tokens of its
// config. It is safe for concurrent use.
type Template struct {
	src     string
	tmpl    *jinja.Template
	special map[string]any
}

// TemplateError is a render failure: raise_exception called by the
// template, or an evaluation error.
type TemplateError struct {
	// Raised is true when the template called raise_exception.
	Raised bool
	// Message is raise_exception's message or the evaluator's error text.
	Message string
}

func (e *TemplateError) Error() string {
	if e.Raised {
		return "chat: template raised: " + e.Message
	}
	return "chat: render: " + e.Message
}

// Load reads the chat template of the model folder dir from its
// tokenizer_config.json.
func Load(dir string) (*Template, error) {
	p := filepath.Join(dir, ConfigFileName)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	t, err := Parse(data, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return t, nil
}

// Parse decodes a tokenizer_config.json and compiles its chat template. name
// picks a template from a list of named ones; "" means DefaultName.
//
// The template is rendered once with a short conversation, with and
// without the generation prompt, under DefaultLimits: one that reaches a
// limit is refused with ErrConfig and the *LimitError (a template that
// raises an exception for that conversation is not refused).
func Parse(config []byte, name string) (t *Template, err error) {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("%w: tokenizer config: %v", ErrConfig, err)
	}
	raw, ok := cfg["chat_template"]
	if !ok || string(raw) == "null" {
		return nil, ErrNoTemplate
	}
	src, err := pickTemplate(raw, name)
	if err != nil {
		return nil, err
	}
	special := map[string]string{}
	for _, k := range specialTokenKeys {
		v, ok := cfg[k]
		if !ok {
			continue
		}
		s, present, err := tokenString(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, k, err)
		}
		if present {
			special[k] = s
		}
	}
	t, err = New(src, special)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			err = t.Check(Limits{})
		}
	}()
	if v, ok := cfg["additional_special_tokens"]; ok && string(v) != "null" {
		var list []json.RawMessage
		if err := json.Unmarshal(v, &list); err != nil {
			return nil, fmt.Errorf("%w: additional_special_tokens: %v", ErrConfig, err)
		}
		var toks []any
		for _, e := range list {
			s, present, err := tokenString(e)
			if err != nil {
				return nil, fmt.Errorf("%w: additional_special_tokens: %v", ErrConfig, err)
			}
			if present {
				toks = append(toks, s)
			}
		}
		t.special["additional_special_tokens"] = toks
	}
	return t, nil
}

// pickTemplate returns the template source of a chat_template field.
func pickTemplate(raw json.RawMessage, name string) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if s == "" {
			return "", ErrNoTemplate
		}
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", fmt.Errorf("%w: chat_template is neither a string nor a list of {name, template}", ErrConfig)
	}
	if name == "" {
		name = DefaultName
	}
	var names []string
	for _, e := range list {
		if e.Name == name {
			if e.Template == "" {
				return "", fmt.Errorf("%w: chat_template %q is empty", ErrConfig, name)
			}
			return e.Template, nil
		}
		names = append(names, e.Name)
	}
	sort.Strings(names)
	return "", fmt.Errorf("%w: no chat_template named %q (have %s)", ErrConfig, name, strings.Join(names, ", "))
}

// tokenString decodes a special token given as a string, an AddedToken
// object {"content": …} or null.
func tokenString(raw json.RawMessage) (string, bool, error) {
	if string(raw) == "null" {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, true, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == nil {
		return "", false, fmt.Errorf("want a string or {\"content\": string}, got %.40s", raw)
	}
	return *obj.Content, true, nil
}

// New compiles a chat template source with the given special tokens
// (bos_token → "<s>", …).
func New(source string, special map[string]string) (*Template, error) {
	if len(source) > MaxSourceBytes {
		return nil, fmt.Errorf("%w: chat_template is %d bytes, over the limit of %d", ErrConfig, len(source), MaxSourceBytes)
	}
	tmpl, err := jinja.Compile(source)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	t := &Template{src: source, tmpl: tmpl, special: map[string]any{}}
	for k, v := range special {
		t.special[k] = v
	}
	return t, nil
}

// Check renders a short conversation with the template, with and without
// the generation prompt, under lim: a render that reaches a limit gives
// ErrConfig wrapping the *LimitError. Errors the template raises itself
// (it may refuse the conversation) are not reported.
func (t *Template) Check(lim Limits) error {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, gen := range []bool{false, true} {
		_, err := t.Render(probe, Options{AddGenerationPrompt: gen, Now: at, Limits: lim})
		if le := (*LimitError)(nil); errors.As(err, &le) {
			return fmt.Errorf("%w: rendering a four-message conversation: %w", ErrConfig, le)
		}
	}
	return nil
}

// Source returns the template's Jinja source.
func (t *Template) Source() string { return t.src }

// SpecialToken returns the special token the config gave for key
// ("bos_token", "eos_token", …) and whether it gave one.
func (t *Template) SpecialToken(key string) (string, bool) {
	s, ok := t.special[key].(string)
	return s, ok
}

// Render renders msgs with the template.
func (t *Template) Render(msgs []Message, o Options) (string, error) {
	data := make(map[string]jinja.Value, len(t.special)+len(o.Vars)+6)
	// transformers passes tools and documents (None unless given), so a
	// template sees them defined.
	data["tools"] = jinja.None()
	data["documents"] = jinja.None()
	for k, v := range t.special {
		data[k] = jinja.FromGoValue(v)
	}
	for k, v := range o.Vars {
		data[k] = jinja.FromGoValue(v)
	}
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	data["messages"] = jinja.FromGoValue(list)
	data["add_generation_prompt"] = jinja.NewBool(o.AddGenerationPrompt)

	var raised *TemplateError
	data["raise_exception"] = jinja.NewCallable("raise_exception", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		msg := "raise_exception called"
		if len(args) > 0 {
			msg = text(args[0])
		}
		raised = &TemplateError{Raised: true, Message: msg}
		return jinja.Undefined(), raised
	})
	now := o.Now
	data["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		format := "%Y-%m-%d"
		if len(args) > 0 {
			format = text(args[0])
		}
		at := now
		if at.IsZero() {
			at = time.Now()
		}
		return jinja.NewString(Strftime(at, format)), nil
	})

	out, err := t.tmpl.RenderLimited(data, o.Limits)
	if err != nil {
		if raised != nil {
			return "", raised
		}
		var le *LimitError
		if errors.As(err, &le) {
			return "", fmt.Errorf("chat: render: %w", le)
		}
		return "", &TemplateError{Message: err.Error()}
	}
	return out, nil
}

// text is the str() of a template value: a string as is, anything else as
// Python prints it.
func text(v jinja.Value) string {
	if v.IsString() {
		return v.AsString()
	}
	return v.String()
}
