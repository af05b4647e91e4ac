package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

type expectedFile struct {
	Reference  string `json:"reference"`
	Now        string `json:"now"`
	Renderings map[string]struct {
		Text  *string `json:"text"`
		Error *string `json:"error"`
	} `json:"renderings"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestReference renders every template × conversation × add_generation_prompt
// and compares with the renderings of @huggingface/jinja in
// testdata/expected.json (made by scripts/chat-fixtures).
func TestReference(t *testing.T) {
	var exp expectedFile
	readJSON(t, "testdata/expected.json", &exp)
	var convs map[string][]Message
	readJSON(t, "testdata/conversations.json", &convs)
	now, err := time.Parse(time.RFC3339, exp.Now)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("testdata/configs/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no configs: %v", err)
	}
	seen := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tmpl, err := Parse(data, "")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for conv, msgs := range convs {
			for _, gen := range []bool{false, true} {
				key := name + "/" + conv + "/nogen"
				if gen {
					key = name + "/" + conv + "/gen"
				}
				want, ok := exp.Renderings[key]
				if !ok {
					t.Errorf("%s: no expected rendering", key)
					continue
				}
				seen++
				got, err := tmpl.Render(msgs, Options{AddGenerationPrompt: gen, Now: now})
				switch {
				case want.Error != nil:
					var te *TemplateError
					if !errors.As(err, &te) || !te.Raised || te.Message != *want.Error {
						t.Errorf("%s: got (%q, %v), want raise_exception(%q)", key, got, err, *want.Error)
					}
				case err != nil:
					t.Errorf("%s: %v", key, err)
				case got != *want.Text:
					t.Errorf("%s:\n got %q\nwant %q", key, got, *want.Text)
				}
			}
		}
	}
	if seen != len(exp.Renderings) {
		t.Errorf("compared %d renderings, expected.json has %d", seen, len(exp.Renderings))
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("testdata/configs/llama2-chat.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFileName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if bos, ok := tmpl.SpecialToken("bos_token"); !ok || bos != "<s>" {
		t.Errorf("bos_token = %q, %v", bos, ok)
	}
	if _, ok := tmpl.SpecialToken("pad_token"); ok {
		t.Error("pad_token null should be absent")
	}
}

func TestNoTemplate(t *testing.T) {
	for _, cfg := range []string{`{"bos_token":"<s>"}`, `{"chat_template":null}`, `{"chat_template":""}`} {
		if _, err := Parse([]byte(cfg), ""); !errors.Is(err, ErrNoTemplate) {
			t.Errorf("%s: err = %v, want ErrNoTemplate", cfg, err)
		}
	}
}

func TestNamedTemplates(t *testing.T) {
	cfg := `{"chat_template":[{"name":"default","template":"D{{ messages|length }}"},{"name":"rag","template":"R"}]}`
	msgs := []Message{{Role: "user", Content: "x"}}
	for name, want := range map[string]string{"": "D1", "default": "D1", "rag": "R"} {
		tmpl, err := Parse([]byte(cfg), name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tmpl.Render(msgs, Options{})
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", name, got, err, want)
		}
	}
	_, err := Parse([]byte(cfg), "nope")
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "default, rag") {
		t.Errorf("missing name: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []string{
		`not json`,
		`{"chat_template":42}`,
		`{"chat_template":"{% if %}"}`,
		`{"chat_template":"x","bos_token":7}`,
	} {
		if _, err := Parse([]byte(cfg), ""); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", cfg, err)
		}
	}
}

func TestVarsAndErrors(t *testing.T) {
	tmpl, err := New(`{{ bos_token }}{{ date_string }}|{{ strftime_now("%d %b %Y %H:%M") }}`, map[string]string{"bos_token": "<s>"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2024, 7, 6, 9, 8, 0, 0, time.UTC)
	got, err := tmpl.Render(nil, Options{Now: now, Vars: map[string]any{"date_string": "D"}})
	if err != nil || got != "<s>D|06 Jul 2024 09:08" {
		t.Errorf("got %q, %v", got, err)
	}
	tmpl, err = New(`{{ messages[0].nope.deeper() }}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmpl.Render([]Message{{Role: "user", Content: "x"}}, Options{})
	var te *TemplateError
	if !errors.As(err, &te) || te.Raised {
		t.Errorf("evaluation error: %v", err)
	}
}

func TestStrftime(t *testing.T) {
	at := time.Date(2026, 2, 3, 14, 5, 6, 0, time.UTC)
	cases := map[string]string{
		"%d %b %Y":          "03 Feb 2026",
		"%Y-%m-%d %H:%M:%S": "2026-02-03 14:05:06",
		"%A %B %e %I%p %j":  "Tuesday February  3 02PM 034",
		"100%% %y %Q":       "100% 26 %Q",
	}
	keys := make([]string, 0, len(cases))
	for k := range cases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, f := range keys {
		if got := Strftime(at, f); got != cases[f] {
			t.Errorf("Strftime(%q) = %q, want %q", f, got, cases[f])
		}
	}
}

// TestToolsDocumentsNone checks that tools and documents are defined and
// None, as transformers passes them (Jinja2 renders this template as
// "True|True|True|"), and that Vars override them.
func TestToolsDocumentsNone(t *testing.T) {
	tmpl, err := New(`{{ tools is defined }}|{{ tools is none }}|{{ documents is none }}|{% if tools %}T{% endif %}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Render(nil, Options{})
	if err != nil || got != "True|True|True|" {
		t.Errorf("got %q, %v", got, err)
	}
	got, err = tmpl.Render(nil, Options{Vars: map[string]any{"tools": []any{"x"}}})
	if err != nil || got != "True|False|True|T" {
		t.Errorf("with tools: got %q, %v", got, err)
	}
}

func TestConcurrentRender(t *testing.T) {
	data, err := os.ReadFile("testdata/configs/llama3.2-instruct.json")
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := Parse(data, "")
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "yo"}}
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	want, err := tmpl.Render(msgs, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 8)
	for range 8 {
		go func() {
			got, _ := tmpl.Render(msgs, Options{Now: now})
			done <- got
		}()
	}
	for range 8 {
		if got := <-done; got != want {
			t.Errorf("concurrent render %q, want %q", got, want)
		}
	}
}

// TestHostileTemplate: a checkpoint's tokenizer_config.json may carry a
// template written to hang or exhaust the node that loads it. One that
// runs away on any conversation is refused by Parse (so at model load and
// import); one that runs away only on some messages fails that render
// with the limit named.
func TestHostileTemplate(t *testing.T) {
	for name, src := range map[string]string{
		"recursion": `{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}`,
		"loop":      `{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}`,
		"growth":    `{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}`,
	} {
		cfg, _ := json.Marshal(map[string]any{"chat_template": src})
		_, err := Parse(cfg, "")
		var le *LimitError
		if !errors.Is(err, ErrConfig) || !errors.As(err, &le) {
			t.Errorf("%s: Parse err = %v; want ErrConfig with a *LimitError", name, err)
		}
	}
	cfg, _ := json.Marshal(map[string]any{"chat_template": `{% macro f() %}{{ f() }}{% endmacro %}{% for m in messages %}{% if m.content == 'boom' %}{{ f() }}{% endif %}{{ m.content }}{% endfor %}`})
	tmpl, err := Parse(cfg, "")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if _, err := tmpl.Render([]Message{{Role: "user", Content: "hi"}}, Options{}); err != nil {
		t.Fatalf("render: %v", err)
	}
	_, err = tmpl.Render([]Message{{Role: "user", Content: "boom"}}, Options{})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != "depth" || !strings.Contains(err.Error(), "depth limit") {
		t.Fatalf("render of the trigger: %v; want the depth limit named", err)
	}
	big := strings.Repeat(" ", MaxSourceBytes+1)
	if _, err := New(big, nil); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("oversized source: %v", err)
	}
}

// TestLongConversationWithinLimits: the shipped templates render a
// conversation of 2,000 turns under DefaultLimits.
func TestLongConversationWithinLimits(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "configs", "*.json"))
	if len(paths) == 0 {
		t.Fatal("no shipped configs")
	}
	var msgs []Message
	msgs = append(msgs, Message{Role: "system", Content: "Be brief."})
	for i := range 1000 {
		msgs = append(msgs, Message{Role: "user", Content: fmt.Sprintf("question %d %s", i, strings.Repeat("word ", 40))}, Message{Role: "assistant", Content: "answer"})
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		tmpl, err := Parse(b, "")
		if errors.Is(err, ErrNoTemplate) {
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		var te *TemplateError
		if _, err := tmpl.Render(msgs, Options{AddGenerationPrompt: true}); err != nil && !errors.As(err, &te) {
			t.Errorf("%s: %v", p, err)
		}
	}
}
