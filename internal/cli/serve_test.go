package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/model"
)

// TestServe runs fedtune serve on a tiny model with a bearer token and
// talks to it with the official OpenAI client; cancelling the command
// stops it cleanly.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	mdir := filepath.Join(dir, "m")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny.yaml", "--seed", "4", "-o", mdir)
	keyFile := filepath.Join(dir, "key")
	mustCLI(t, "keygen", "-o", keyFile)
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("tok3n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, []string{"serve", "--model", mdir, "--addr", "127.0.0.1:0", "--model-id", "tiny",
			"--auth-token-file", tokFile, "--max-concurrent", "2", "--key", keyFile}, &out, &errb)
	}()
	re := regexp.MustCompile(`on (http://\S+/v1/)`)
	var url string
	for deadline := time.Now().Add(30 * time.Second); url == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, errb.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", errb.String())
		}
	}
	c := openai.NewClient(option.WithBaseURL(url), option.WithAPIKey("tok3n"), option.WithMaxRetries(0))
	page, err := c.Models.List(ctx)
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != "tiny" {
		t.Fatalf("models: %v %+v", err, page)
	}
	res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "tiny",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}, MaxTokens: openai.Int(5), Temperature: openai.Float(0)})
	if err != nil || res.Usage.CompletionTokens == 0 || res.Usage.CompletionTokens > 5 {
		t.Fatalf("chat: %v %+v", err, res)
	}
	st := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: "tiny",
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("abc")}, MaxTokens: openai.Int(4)})
	n := 0
	for st.Next() {
		n++
	}
	if err := st.Err(); err != nil || n == 0 {
		t.Fatalf("stream: %d chunks, %v", n, err)
	}
	// Each answer's receipt, bundled with the request and prompt ids,
	// passes fedtune audit receipt --replay: the same tokens, bit for bit.
	for i, tc := range []struct {
		path, body, prompt string
	}{
		{"completions", `{"model":"tiny","prompt":"abc","max_tokens":6,"temperature":0.8,"seed":5}`, "abc"},
		{"chat/completions", `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0}`, "user: hi\nassistant:"},
	} {
		req, _ := http.NewRequest("POST", url+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer tok3n")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		env, _, err := receipt.Parse([]byte(res.Header.Get("Fedtune-Receipt")))
		if err != nil {
			t.Fatalf("%s: status %d, receipt: %v", tc.path, res.StatusCode, err)
		}
		var ids []int
		for _, c := range []byte(tc.prompt) {
			ids = append(ids, int(c))
		}
		b, _ := receipt.NewBundle(env, []byte(tc.body), ids, nil, "").Encode()
		p := filepath.Join(dir, fmt.Sprintf("receipt%d.json", i))
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if out := mustCLI(t, "audit", "receipt", p, "--replay", "--model", mdir); !strings.Contains(out, "ok   replay") || !strings.Contains(out, "ok   prompt") {
			t.Errorf("%s: audit receipt:\n%s", tc.path, out)
		}
	}
	bad := openai.NewClient(option.WithBaseURL(url), option.WithAPIKey("nope"), option.WithMaxRetries(0))
	if _, err := bad.Models.List(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong token: %v, want 401", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v\n%s", err, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(errb.String(), "msg=serving") || !strings.Contains(errb.String(), "msg=request") {
		t.Errorf("log:\n%s", errb.String())
	}
}

func TestServeFlags(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCLI(t, "serve", "--addr", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "--model") {
		t.Errorf("no --model: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := runCLI(t, "serve", "--model", dir, "--auth-token-file", empty); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token file: %v", err)
	}
	keyFile := filepath.Join(dir, "key")
	mustCLI(t, "keygen", "-o", keyFile)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ledger", "127.0.0.1:1", "--job", "j"}, "--ledger needs --job and --artifacts"},
		{[]string{"--ledger", "127.0.0.1:1", "--artifacts", "127.0.0.1:1"}, "--ledger needs --job and --artifacts"},
		{[]string{"--ledger", "127.0.0.1:1", "--job", "j", "--artifacts", "127.0.0.1:1", "--adapter", dir}, "no --adapter"},
		{[]string{"--ledger", "127.0.0.1:1", "--job", "j", "--artifacts", "127.0.0.1:1", "--key", keyFile,
			"--job-file", filepath.Join(dir, "missing.yaml")}, "--job-file"},
	} {
		_, err := runCLI(t, append([]string{"serve", "--model", dir}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
	// A folder that holds no model, or no adapter, is named as such.
	if _, err := runCLI(t, "serve", "--model", dir, "--addr", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "is not a model folder (no config.json") {
		t.Errorf("serve of an empty folder: %v", err)
	}
	modelDir := filepath.Join(dir, "tiny")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "9", "-o", modelDir)
	if _, err := runCLI(t, "serve", "--model", modelDir, "--adapter", modelDir, "--addr", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "is not a LoRA adapter folder") {
		t.Errorf("serve with a model folder as --adapter: %v", err)
	}
}

// TestServeChatTemplateReceipt: a chat answer of a model with its own chat
// template (one that prints the date) passes audit receipt --replay's
// prompt check, which renders the request's messages with that template:
// the check that refuses a prompt the node made up does not refuse an
// honest node.
func TestServeChatTemplateReceipt(t *testing.T) {
	dir := t.TempDir()
	mdir, rdir := filepath.Join(dir, "m"), filepath.Join(dir, "receipts")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny.yaml", "--seed", "4", "-o", mdir)
	tmpl := `{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}` +
		`{% if add_generation_prompt %}[{{ strftime_now('%d %B %Y') }}]<assistant>{% endif %}`
	cfg, _ := json.Marshal(map[string]any{"chat_template": tmpl})
	if err := os.WriteFile(filepath.Join(mdir, "tokenizer_config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "key")
	mustCLI(t, "keygen", "-o", keyFile)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, []string{"serve", "--model", mdir, "--addr", "127.0.0.1:0", "--model-id", "tiny", "--key", keyFile, "--receipts-dir", rdir}, &out, &errb)
	}()
	re := regexp.MustCompile(`on (http://\S+/v1/)`)
	var url string
	for deadline := time.Now().Add(30 * time.Second); url == ""; time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", errb.String())
		}
	}
	for _, body := range []string{
		`{"model":"tiny","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0}`,
		`{"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],"max_tokens":4,"temperature":0}`,
	} {
		res, err := http.Post(url+"chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: status %d", body, res.StatusCode)
		}
		p := inference.BundlePath(rdir, []byte(body))
		if a := mustCLI(t, "audit", "receipt", p, "--replay", "--model", mdir); !strings.Contains(a, "ok   prompt    the request's") || !strings.Contains(a, "the model's chat template") || !strings.Contains(a, "ok   replay") {
			t.Errorf("%s: audit receipt:\n%s", body, a)
		}
	}
	// The receipt names the served folder's tokenizer digest: a replay
	// folder with another chat template (a system prompt put first) is
	// refused before the prompt is re-derived, naming both digests.
	served, err := model.TokenizerDigest(mdir)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if err := os.CopyFS(other, os.DirFS(mdir)); err != nil {
		t.Fatal(err)
	}
	cfg, _ = json.Marshal(map[string]any{"chat_template": "<system>obey</system>" + tmpl})
	if err := os.WriteFile(filepath.Join(other, "tokenizer_config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	otherTok, err := model.TokenizerDigest(other)
	if err != nil {
		t.Fatal(err)
	}
	p := inference.BundlePath(rdir, []byte(`{"model":"tiny","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":4,"temperature":0}`))
	if _, err := runCLI(t, "audit", "receipt", p, "--replay", "--model", other); err == nil ||
		!strings.Contains(err.Error(), "tokenizer digest "+otherTok+", the receipt names "+served) {
		t.Errorf("replay on a folder with another chat template: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v\n%s", err, errb.String())
	}
}
