package inference_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestLoadModel: a model folder with an adapter and a chat template is
// served under its weight digest; chat requests use its template.
func TestLoadModel(t *testing.T) {
	c := modeltest.TinyConfig()
	c.VocabSize = 256
	c.MaxPositionEmbeddings = 64
	m, err := model.New(c, 30)
	if err != nil {
		t.Fatal(err)
	}
	dir, adDir := filepath.Join(t.TempDir(), "m"), filepath.Join(t.TempDir(), "a")
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	ad, err := model.NewAdapter(c, model.LoRAConfig{Rank: 2, Alpha: 4, Targets: model.DefaultTargets}, 31)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ad.Save(adDir); err != nil {
		t.Fatal(err)
	}
	tmpl := `{"chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"}`
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	sm, err := inference.LoadModel(dir, adDir, "", engine.NewHost(), 2)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := model.DigestPath(dir)
	add, _ := model.DigestPath(adDir)
	if sm.ID != md || sm.Digest != md || sm.Adapter != add || sm.Context != 64 {
		t.Errorf("model %s digest %s adapter %s context %d; want %s %s 64", sm.ID, sm.Digest, sm.Adapter, sm.Context, md, add)
	}
	if _, ok := sm.Chat.(inference.TemplateChat); !ok {
		t.Fatalf("chat template %T", sm.Chat)
	}
	// Receipts name the folder's tokenizer digest, the chat template in it.
	if td, err := model.TokenizerDigest(dir); err != nil || sm.Tokenizer != td {
		t.Errorf("tokenizer digest %s, want the folder's %s (%v)", sm.Tokenizer, td, err)
	}
	f := serve(t, sm, inference.Config{})
	res, err := f.client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: md,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(2)})
	if err != nil {
		t.Fatal(err)
	}
	if want := len("<user>hi</user><assistant>"); int(res.Usage.PromptTokens) != want {
		t.Errorf("prompt tokens %d, want %d (the template's rendering)", res.Usage.PromptTokens, want)
	}
}

// TestModelFolder: a full fine-tune's weights file served on a base
// folder's config and chat template has the file's digest and the base's
// template; the base's own weights are not carried over.
func TestModelFolder(t *testing.T) {
	c := modeltest.TinyConfig()
	c.VocabSize = 256
	c.MaxPositionEmbeddings = 64
	base, tuned := filepath.Join(t.TempDir(), "base"), filepath.Join(t.TempDir(), "tuned")
	for i, dir := range []string{base, tuned} {
		m, err := model.New(c, uint64(40+i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Save(dir, safetensors.F32); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := `{"chat_template": "{% for m in messages %}[{{ m.content }}]{% endfor %}"}`
	if err := os.WriteFile(filepath.Join(base, "tokenizer_config.json"), []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "model.safetensors.index.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	weights := filepath.Join(tuned, model.WeightsFile)
	want, err := model.DigestPath(weights)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "served")
	for range 2 { // a second call over the first folder replaces its files
		if err := inference.ModelFolder(base, weights, dir); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		t.Error("the base's shard index was carried over")
	}
	sm, err := inference.LoadModel(dir, "", "", engine.NewHost(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Gen.Close()
	if sm.Digest != want || sm.Adapter != "" {
		t.Errorf("served digest %s adapter %q, want the weights file's %s", sm.Digest, sm.Adapter, want)
	}
	if _, ok := sm.Chat.(inference.TemplateChat); !ok {
		t.Errorf("chat template %T, want the base's", sm.Chat)
	}
	// The served folder's tokenizer files are the base's: so is its
	// tokenizer digest, the one the base model is registered with.
	if td, err := model.TokenizerDigest(base); err != nil || sm.Tokenizer != td {
		t.Errorf("served tokenizer digest %s, want the base folder's %s (%v)", sm.Tokenizer, td, err)
	}
	if err := inference.ModelFolder(filepath.Join(t.TempDir(), "missing"), weights, dir); err == nil {
		t.Error("a missing base folder was accepted")
	}
}

// TestHostileChatTemplate: a served model's chat template is code its
// publisher chose. One that runs away on every conversation is refused at
// load; one that runs away only on a trigger message costs that request
// an error naming the limit, and the node goes on serving.
func TestHostileChatTemplate(t *testing.T) {
	c := modeltest.TinyConfig()
	c.VocabSize = 256
	c.MaxPositionEmbeddings = 64
	m, err := model.New(c, 32)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	write := func(src string) {
		b, _ := json.Marshal(map[string]any{"chat_template": src})
		if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}`)
	if _, err := inference.LoadModel(dir, "", "", engine.NewHost(), 1); err == nil || !strings.Contains(err.Error(), "steps limit") {
		t.Fatalf("a runaway template loaded: %v", err)
	}
	write(`{% set ns = namespace(s='x') %}{% for m in messages %}{% if m.content == 'boom' %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{% endif %}[{{ m.content }}]{% endfor %}`)
	sm, err := inference.LoadModel(dir, "", "", engine.NewHost(), 1)
	if err != nil {
		t.Fatal(err)
	}
	f := serve(t, sm, inference.Config{})
	start := time.Now()
	code, body := post(t, f.url+"/v1/chat/completions", `{"model":"`+sm.ID+`","max_tokens":2,"messages":[{"role":"user","content":"boom"}]}`)
	if code != http.StatusBadRequest || !strings.Contains(body, "output limit") {
		t.Fatalf("trigger: %d %s; want 400 naming the output limit", code, body)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the refused request took %v", took)
	}
	res, err := f.client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: sm.ID,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, MaxTokens: openai.Int(2)})
	if err != nil {
		t.Fatal(err)
	}
	if want := len("[hi]"); int(res.Usage.PromptTokens) != want {
		t.Errorf("prompt tokens %d, want %d", res.Usage.PromptTokens, want)
	}
}
