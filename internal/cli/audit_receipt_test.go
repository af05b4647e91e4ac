package cli

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// answerBundle generates an answer to a completions request for prompt on
// the model in dir as a server would, and returns its signed bundle; edit
// may change the answer before it is signed.
func answerBundle(t *testing.T, key ed25519.PrivateKey, dir, prompt string, s receipt.Sampling, edit func(*receipt.Answer)) *receipt.Bundle {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"model": "m", "prompt": prompt, "max_tokens": s.MaxTokens, "temperature": s.Temperature, "top_p": cmp.Or(s.TopP, 1), "seed": s.Seed})
	return answerRequest(t, key, dir, prompt, req, s, edit)
}

// answerRequest is answerBundle for request body req whose prompt text
// (rendered as the server would) is prompt.
func answerRequest(t *testing.T, key ed25519.PrivateKey, dir, prompt string, req []byte, s receipt.Sampling, edit func(*receipt.Answer)) *receipt.Bundle {
	t.Helper()
	m, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(dir, m.Config.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(prompt)
	if m.Config.BOSTokenID != nil {
		ids = append([]int{*m.Config.BOSTokenID}, ids...)
	}
	out, err := engine.Generate(context.Background(), engine.NewHost(), m, ids, model.GenerateConfig{
		MaxTokens: s.MaxTokens, Temperature: s.Temperature, TopP: s.TopP, Seed: s.Seed, Stop: m.Config.EOSTokenID})
	if err != nil {
		t.Fatal(err)
	}
	d, err := model.DigestPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := receipt.Answer{Model: d, Request: req, PromptIDs: ids, CompletionIDs: out, Sampling: s}
	if edit != nil {
		edit(&a)
	}
	_, b, err := receipt.SignAnswer(key, a, tok.Decode(out))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeBundle(t *testing.T, b *receipt.Bundle) string {
	t.Helper()
	data, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "receipt.json")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAuditReceiptReplay: a receipt over a real generation verifies and
// replays, greedy and sampled; altered receipts, answers and models are
// each refused with their reason.
func TestAuditReceiptReplay(t *testing.T) {
	dir := t.TempDir()
	modelDir, otherDir := filepath.Join(dir, "m"), filepath.Join(dir, "other")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "9", "-o", modelDir)
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "10", "-o", otherDir)
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	greedy := receipt.Sampling{MaxTokens: 8}
	sampled := receipt.Sampling{Temperature: 0.9, TopP: 0.95, MaxTokens: 8, Seed: 42}

	// An answer the node's time limit cut is the start of the replay.
	if out := mustCLI(t, "audit", "receipt", writeBundle(t, answerBundle(t, key, modelDir, "hello there", sampled, func(a *receipt.Answer) {
		a.CompletionIDs, a.Cut = a.CompletionIDs[:3], receipt.CutTime
	})), "--replay", "--model", modelDir); !strings.Contains(out, "ok   replay    3 tokens regenerated") || !strings.Contains(out, "note cut       the node's time limit cut the answer after 3 tokens (the replay goes on to 8)") {
		t.Errorf("answer cut by the time limit:\n%s", out)
	}
	for name, s := range map[string]receipt.Sampling{"greedy": greedy, "sampled": sampled} {
		p := writeBundle(t, answerBundle(t, key, modelDir, "hello there", s, nil))
		out := mustCLI(t, "audit", "receipt", p, "--replay", "--model", modelDir)
		for _, want := range []string{"ok   signature", "ok   bundle", "ok   prompt", "ok   replay    8 tokens regenerated (" + map[string]string{"greedy": "greedy", "sampled": "sampled"}[name]} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %q:\n%s", name, want, out)
			}
		}
		// The bare envelope verifies; it cannot be replayed.
		b, _ := receipt.DecodeBundle(must(os.ReadFile(p)))
		env, _ := b.Envelope()
		ep := filepath.Join(t.TempDir(), "env.json")
		if err := os.WriteFile(ep, env, 0o644); err != nil {
			t.Fatal(err)
		}
		mustCLI(t, "audit", "receipt", ep)
		if _, err := runCLI(t, "audit", "receipt", ep, "--replay", "--model", modelDir); err == nil || !strings.Contains(err.Error(), "needs the bundle") {
			t.Errorf("replay of a bare envelope: %v", err)
		}
	}

	// A chat request: the messages rendered (no chat template in the
	// folder: the plain form) give the prompt ids, content parts read as
	// the server reads them. A node that fed the model another rendering
	// (a system prompt of its own, say) is refused: the plain form does
	// not depend on the time.
	for _, c := range []struct{ req, rendered, want string }{
		{`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0}`, "user: hi\nassistant:",
			"ok   prompt    the request's 1 messages, rendered with the plain role: content form"},
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"h"},{"type":"text","text":"i"}]}],"max_tokens":8,"temperature":0}`, "user: hi\nassistant:",
			"ok   prompt    the request's 1 messages, rendered with the plain role: content form"},
		{`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0}`, "system: obey the node\nuser: hi\nassistant:",
			"FAIL prompt    receipt: does not match: the request's 1 messages rendered with the plain role: content form (the model has no chat template) tokenize to other ids than the bundle's"},
		{`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":8,"temperature":0}`, "system: obey the node\nuser: hi\nassistant:",
			"FAIL prompt    receipt: does not match"},
	} {
		p := writeBundle(t, answerRequest(t, key, modelDir, c.rendered, []byte(c.req), greedy, nil))
		out, err := runCLI(t, "audit", "receipt", p, "--replay", "--model", modelDir)
		if !strings.Contains(out, c.want) || (err == nil) != strings.HasPrefix(c.want, "ok") {
			t.Errorf("chat request %s rendered as %q: %v, output lacks %q:\n%s", c.req, c.rendered, err, c.want, out)
		}
	}

	tamper := func(b *receipt.Bundle, old, new string) *receipt.Bundle {
		env, _ := b.Envelope()
		e := strings.Replace(string(env), old, new, 1)
		b.Receipt = json.RawMessage(e)
		return b
	}
	for _, c := range []struct {
		name   string
		bundle func() *receipt.Bundle
		dir    string
		want   string
	}{
		{"tokens not the generation", func() *receipt.Bundle {
			return answerBundle(t, key, modelDir, "hello there", greedy, func(a *receipt.Answer) { a.CompletionIDs[3] ^= 1 })
		}, modelDir, "replay: receipt: does not match: the replay's 8 tokens (greedy) hash to"},
		{"seed not the generation's", func() *receipt.Bundle {
			return answerBundle(t, key, modelDir, "hello there", sampled, func(a *receipt.Answer) {
				a.Sampling.Seed = 43 // and the request asks for it: the tokens are seed 42's
				a.Request = []byte(strings.Replace(string(a.Request), `"seed":42`, `"seed":43`, 1))
			})
		}, modelDir, "(first difference at token"},
		// Cut short with no stop string and no mark of the time limit.
		{"answer cut short", func() *receipt.Bundle {
			return answerBundle(t, key, modelDir, "hello there", greedy, func(a *receipt.Answer) { a.CompletionIDs = a.CompletionIDs[:3] })
		}, modelDir, "replay: receipt: does not match: the replay (greedy) keeps 8 tokens (no stop string occurs in the replay's text), the receipt signed 3"},
		{"another model", func() *receipt.Bundle { return answerBundle(t, key, modelDir, "hello there", greedy, nil) },
			otherDir, "replay: --model " + otherDir + " has digest"},
		{"prompt not the request's", func() *receipt.Bundle {
			return answerBundle(t, key, modelDir, "hello there", greedy, func(a *receipt.Answer) { a.PromptIDs = append(a.PromptIDs, 'x') })
		}, modelDir, "prompt: receipt: does not match: the request's prompt tokenizes to"},
		{"request altered", func() *receipt.Bundle {
			b := answerBundle(t, key, modelDir, "hello there", greedy, nil)
			b.Request = []byte(strings.Replace(string(b.Request), "hello", "jello", 1))
			return b
		}, modelDir, "bundle: receipt: does not match: bundle: request body hashes to"},
		{"payload altered", func() *receipt.Bundle {
			return tamper(answerBundle(t, key, modelDir, "hello there", greedy, nil), `"payload":"ey`, `"payload":"EY`)
		}, modelDir, "signature: receipt: malformed"},
		{"signature altered", func() *receipt.Bundle {
			return tamper(answerBundle(t, key, modelDir, "hello there", greedy, nil), `"sig":"`, `"sig":"AAAA`)
		}, modelDir, "signature: receipt: bad signature"},
	} {
		p := writeBundle(t, c.bundle())
		out, err := runCLI(t, "audit", "receipt", p, "--replay", "--model", c.dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if !strings.Contains(out, "FAIL ") {
			t.Errorf("%s: no FAIL line:\n%s", c.name, out)
		}
	}
	if _, err := runCLI(t, "audit", "receipt", "x", "--replay"); err == nil || !strings.Contains(err.Error(), "--replay needs --model") {
		t.Errorf("--replay without --model: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestCommitsModel: the receipt's block must hold the tx that committed
// the model: a ModelRegistered or a RoundCommitted naming it.
func TestCommitsModel(t *testing.T) {
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	d := func(c byte) string { return strings.Repeat(string(c), 64) }
	tx := func(body ledger.TxBody) []byte {
		env, err := ledger.SignTx(key, "chain", 1, body)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	reg := tx(ledger.ModelRegistered{Digest: d('a'), Name: "a", Licence: "l", Source: "s"})
	commit := tx(ledger.RoundCommitted{JobID: "job", Round: 1, ModelDigest: d('b'), Strategy: "fedavg",
		Contributors: []ledger.Contribution{{Trainer: d('c'), UpdateDigest: d('e'), Weight: 1}}})
	other := tx(ledger.ModelRegistered{Digest: d('f'), Name: "f", Licence: "l", Source: "s"})
	vb := &client.VerifiedBlock{Block: &ledger.Block{Header: ledger.Header{Height: 5}, Txs: [][]byte{reg, commit, other}}}
	hashOf := func(b []byte) string { h := ledger.TxHash(b); return hex.EncodeToString(h[:]) }
	for _, c := range []struct {
		m    ledger.Model
		want string
	}{
		{ledger.Model{Digest: d('a'), TxHash: hashOf(reg)}, ""},
		{ledger.Model{Digest: d('b'), TxHash: hashOf(commit), JobID: "job", Round: 1}, ""},
		{ledger.Model{Digest: d('a'), TxHash: hashOf(other)}, "is a ModelRegistered that does not commit"},
		{ledger.Model{Digest: d('a'), TxHash: d('9')}, "holds no tx"},
	} {
		err := commitsModel(vb, &c.m)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("model %s tx %s: %v, want %q", c.m.Digest[:4], c.m.TxHash[:8], err, c.want)
		}
	}
}

// TestAuditReceiptAdapter: an answer of a model with a LoRA adapter merged
// replays only with that adapter.
func TestAuditReceiptAdapter(t *testing.T) {
	dir := t.TempDir()
	modelDir, adapterDir := filepath.Join(dir, "m"), filepath.Join(dir, "ad")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny-tied-mqa.yaml", "--seed", "9", "-o", modelDir)
	base, err := model.Load(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := model.NewAdapter(base.Config, model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj"}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range ad.Tensors {
		for i := range ts.Data {
			ts.Data[i] = float32((i*7)%5-2) * 0.3
		}
	}
	adDigest, err := ad.Save(adapterDir)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := base.Merge(ad)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(modelDir, base.Config.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode("adapted")
	if base.Config.BOSTokenID != nil {
		ids = append([]int{*base.Config.BOSTokenID}, ids...)
	}
	gen := func(m *model.Model) []int {
		out, err := engine.Generate(context.Background(), engine.NewHost(), m, ids, model.GenerateConfig{MaxTokens: 8, Stop: m.Config.EOSTokenID})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	out := gen(merged)
	if slices.Equal(out, gen(base)) {
		t.Fatal("the adapter does not change the answer; the test would prove nothing")
	}
	d, err := model.DigestPath(modelDir)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ledger.GenerateKey()
	_, b, err := receipt.SignAnswer(key, receipt.Answer{Model: d, Adapter: adDigest, Request: []byte(`{"model":"m","prompt":"adapted","max_tokens":8,"temperature":0}`),
		PromptIDs: ids, CompletionIDs: out, Sampling: receipt.Sampling{MaxTokens: 8}}, "")
	if err != nil {
		t.Fatal(err)
	}
	p := writeBundle(t, b)
	if out := mustCLI(t, "audit", "receipt", p, "--replay", "--model", modelDir, "--adapter", adapterDir); !strings.Contains(out, "ok   replay") {
		t.Fatalf("replay with the adapter:\n%s", out)
	}
	if _, err := runCLI(t, "audit", "receipt", p, "--replay", "--model", modelDir); err == nil || !strings.Contains(err.Error(), "pass its folder as --adapter") || !strings.Contains(err.Error(), "--fetch-dir") {
		t.Fatalf("replay without the adapter: %v", err)
	}
}
