package jinja

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzRender compiles and renders template sources (a chat template is
// outside input: it ships in a published checkpoint) under small limits:
// an error is fine; a panic (recovered as "evaluation failed") or a render
// past its limits is not.
func FuzzRender(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "templates", "*.jinja"))
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b))
		}
	}
	for _, s := range []string{
		`{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}`,
		`{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}`,
		`{% set ns = namespace(l=[1]) %}{% for i in range(80) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l|tojson }}`,
		`{{ ('x' * 1000) | replace('', 'y') }}`,
		`{{ messages[0].content | indent(8) }}{{ 'a' * -3 }}`,
	} {
		f.Add(s)
	}
	data := map[string]Value{"messages": FromGoValue([]any{
		map[string]any{"role": "user", "content": "hi"},
		map[string]any{"role": "assistant", "content": "hello"},
	})}
	lim := Limits{Steps: 100_000, Output: 1 << 16, Alloc: 1 << 22, Depth: 100}
	f.Fuzz(func(t *testing.T, src string) {
		timer := time.AfterFunc(20*time.Second, func() { panic(fmt.Sprintf("hang on %q", src)) })
		defer timer.Stop()
		tmpl, err := Compile(src)
		if err != nil {
			return
		}
		out, err := tmpl.RenderLimited(data, lim)
		if err != nil {
			if strings.Contains(err.Error(), "evaluation failed") {
				t.Fatalf("panic: %v", err)
			}
			return
		}
		if len(out) > lim.Output {
			t.Fatalf("output of %d bytes over the limit", len(out))
		}
	})
}
