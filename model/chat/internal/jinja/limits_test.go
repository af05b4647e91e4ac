package jinja

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestHostileTemplates runs templates written to hang or exhaust a node
// (a chat template ships inside a checkpoint anyone may publish): each
// must stop quickly with a *LimitError naming its limit, or a clear error,
// and never panic or run away.
func TestHostileTemplates(t *testing.T) {
	deep := "{{ " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000) + " }}"
	blocks := strings.Repeat("{% if true %}", 1000) + strings.Repeat("{% endif %}", 1000)
	chain := "{{ 0" + strings.Repeat(" + 1", 5000) + " }}"
	for _, tc := range []struct {
		name, src string
		limit     string // LimitError.Limit wanted; "" for another error
		compile   bool   // the error comes from Compile
		errHas    string
	}{
		{name: "nested loops", src: `{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}`, limit: "steps"},
		{name: "self recursion", src: `{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}`, limit: "depth"},
		{name: "exponential recursion", src: `{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}`, limit: "steps"},
		{name: "string doubling", src: `{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}`, limit: "output"},
		{name: "string concat doubling", src: `{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}`, limit: "output"},
		{name: "string repeat", src: `{{ 'x' * 10000000000 }}`, limit: "output"},
		{name: "output growth", src: `{% for i in range(1000000) %}{{ 'x' * 1000 }}{% endfor %}`, limit: "output"},
		{name: "alloc churn", src: `{% for i in range(1000000) %}{% set s = 'x' * 1000000 %}{% endfor %}`, limit: "alloc"},
		{name: "list doubling", src: `{% set ns = namespace(l=[1]) %}{% for i in range(200) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}`, limit: "steps"},
		{name: "list doubling compared", src: `{% set ns = namespace(l=[1]) %}{% for i in range(80) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l == ns.l }}`, limit: "steps"},
		{name: "list doubling to json", src: `{% set ns = namespace(l=[1]) %}{% for i in range(80) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l | tojson }}`, limit: "steps"},
		{name: "deep list", src: `{% set ns = namespace(l=1) %}{% for i in range(100000) %}{% set ns.l = [ns.l] %}{% endfor %}`, limit: "depth"},
		{name: "deep batch", src: `{% set ns = namespace(l=[1]) %}{% for i in range(100000) %}{% set ns.l = ns.l|batch(1) %}{% endfor %}`, limit: "depth"},
		{name: "huge range", src: `{{ range(10000000000) | length }}`, limit: "range"},
		{name: "huge indent", src: `{{ 'a\nb' | indent(10000000000) }}`, limit: "build"},
		{name: "huge replace", src: `{{ ('x' * 100000) | replace('', 'y' * 100000) }}`, limit: "build"},
		{name: "huge str.replace", src: `{{ ('x' * 100000).replace('', 'y' * 100000) }}`, limit: "build"},
		{name: "huge format", src: `{{ ('{0}' * 100000).format('y' * 100000) }}`, limit: "build"},
		{name: "huge join", src: `{{ range(1000000) | join('y' * 1000) }}`, limit: "build"},
		{name: "huge tojson indent", src: `{{ range(1000000) | tojson(indent=64) }}`, limit: "build"},
		{name: "long expression chain", src: chain, limit: "depth"},
		{name: "string to runes", src: `{{ ('x' * 10000000) | list | length }}`, limit: "steps"},
		{name: "loop over a string", src: `{% for c in 'x' * 10000000 %}{% endfor %}`, limit: "steps"},
		{name: "split to parts", src: `{{ (',' * 10000000).split(',') | length }}`, limit: "steps"},
		{name: "split on nothing", src: `{{ ('x' * 10000000).split('') | length }}`, limit: "steps"},
		{name: "length of a long string again and again", src: `{% set s = 'x' * 10000000 %}{% for i in range(1000000) %}{{ s | length }}{% endfor %}`, limit: "steps"},
		{name: "indexing a long string again and again", src: `{% set s = 'x' * 10000000 %}{% for i in range(1000000) %}{{ s[5] }}{% endfor %}`, limit: "alloc"},
		{name: "deep parentheses", src: deep, limit: "parse depth", compile: true},
		{name: "deep blocks", src: blocks, limit: "parse depth", compile: true},
		{name: "namespace into itself", src: `{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}`, errHas: "cannot be stored"},
		{name: "namespace in a list", src: `{% set ns = namespace() %}{% set l = [ns, ns] %}`, errHas: "cannot be stored"},
		{name: "namespace in a namespace", src: `{% set ns = namespace() %}{% set o = namespace(a=ns) %}`, errHas: "cannot be stored"},
		{name: "loop kept", src: `{% set ns = namespace() %}{% for i in [1] %}{% set ns.l = loop %}{% endfor %}`, errHas: "cannot be stored"},
		{name: "list append", src: `{% set l = [] %}{% set _ = l.append(l) %}{{ l }}`, errHas: "list.append is refused"},
		{name: "dict update", src: `{% set d = {} %}{% set _ = d.update({'a': d}) %}`, errHas: "dict.update is refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			tmpl, err := Compile(tc.src)
			if err == nil {
				if tc.compile {
					t.Fatal("compiled; want a parse depth error")
				}
				_, err = tmpl.RenderLimited(map[string]Value{}, Limits{})
			} else if !tc.compile {
				t.Fatalf("compile: %v", err)
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("took %v", took)
			}
			if err == nil {
				t.Fatal("rendered; want an error")
			}
			var le *LimitError
			switch {
			case tc.limit != "":
				if !errors.As(err, &le) || le.Limit != tc.limit {
					t.Fatalf("err = %v; want the %s limit", err, tc.limit)
				}
				if !strings.Contains(err.Error(), "exceeds its "+tc.limit+" limit") {
					t.Errorf("message %q does not name the limit", err)
				}
			case !strings.Contains(err.Error(), tc.errHas):
				t.Fatalf("err = %v; want %q", err, tc.errHas)
			}
			if strings.Contains(err.Error(), "evaluation failed") {
				t.Errorf("a panic was recovered: %v", err)
			}
		})
	}
}

// TestLimitsAreSet shows each limit stops a render just past it and not
// before: the same template renders under a limit it fits.
func TestLimitsAreSet(t *testing.T) {
	tmpl, err := Compile(`{% for m in messages %}{{ m.role }}: {{ m.content | trim }}
{% endfor %}`)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []any
	for range 1000 {
		msgs = append(msgs, map[string]any{"role": "user", "content": strings.Repeat("word ", 20)})
	}
	data := map[string]Value{"messages": FromGoValue(msgs)}
	out, err := tmpl.RenderLimited(data, Limits{})
	if err != nil {
		t.Fatalf("default limits: %v", err)
	}
	for _, tc := range []struct {
		name string
		lim  Limits
	}{
		{"steps", Limits{Steps: 5000}},
		{"output", Limits{Output: len(out) - 1}},
		{"alloc", Limits{Alloc: int64(len(out))}},
		{"depth", Limits{Depth: 2}},
	} {
		if _, err := tmpl.RenderLimited(data, tc.lim); err == nil {
			t.Errorf("%s: rendered under %+v", tc.name, tc.lim)
		} else if le := (*LimitError)(nil); !errors.As(err, &le) || le.Limit != tc.name {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
	if got, err := tmpl.RenderLimited(data, Limits{Output: len(out)}); err != nil || got != out {
		t.Errorf("Output = its length: %v", err)
	}
}

// TestNoPanics covers inputs that made the upstream evaluator panic.
func TestNoPanics(t *testing.T) {
	for src, want := range map[string]string{
		`{{ 'a' * -1 }}`: "",
		`{{ 'ab' * 2 }}`: "abab",
	} {
		tmpl, err := Compile(src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tmpl.RenderValues(nil)
		if err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", src, got, err, want)
		}
	}
}
