package receipt

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/internal/strictjson"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testKey is a fixed key, so that the golden envelope is stable.
func testKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}

func hexOf(c byte) string { return strings.Repeat(string(c), 64) }

func sample(t testing.TB) Receipt {
	t.Helper()
	th, err := TokensHash([]int{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	ph, err := TokensHash([]int{0, 42})
	if err != nil {
		t.Fatal(err)
	}
	return Receipt{
		Model:            hexOf('a'),
		Adapter:          hexOf('b'),
		Block:            &Block{Height: 7, Hash: hexOf('c')},
		RequestHash:      RequestHash([]byte(`{"model":"m","prompt":"hi"}`)),
		PromptHash:       ph,
		PromptTokens:     2,
		TokensHash:       th,
		CompletionTokens: 3,
		Sampling:         Sampling{Temperature: 0.7, TopP: 0.95, MaxTokens: 16, Stop: []string{"\n\n"}, StopTokenIDs: []int{2}, Seed: 1 << 60},
		Time:             time.Date(2026, 12, 6, 4, 30, 0, 123456789, time.UTC),
	}
}

func TestTokensHash(t *testing.T) {
	b, err := EncodeTokens([]int{1, 256, 0xffffffff})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{1, 0, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff}; !bytes.Equal(b, want) {
		t.Fatalf("EncodeTokens = %x, want %x", b, want)
	}
	// SHA-256 of the empty string: no tokens.
	if h, _ := TokensHash(nil); h != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Fatalf("TokensHash(nil) = %s", h)
	}
	for _, bad := range []int{-1, 1 << 32} {
		if _, err := TokensHash([]int{bad}); err == nil {
			t.Errorf("TokensHash([%d]) accepted", bad)
		}
	}
}

// TestGolden pins the envelope's bytes: a change to the encoding breaks
// every receipt already issued, so it must be deliberate (-update).
func TestGolden(t *testing.T) {
	env, err := Sign(testKey(), sample(t))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "receipt.golden")
	if *update {
		if err := os.WriteFile(path, append(env, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want = bytes.TrimSuffix(want, []byte("\n"))
	if !bytes.Equal(env, want) {
		t.Fatalf("envelope changed:\n got %s\nwant %s", env, want)
	}
	r, err := Verify(want)
	if err != nil {
		t.Fatal(err)
	}
	s := sample(t)
	s.Signer, s.PublicKey = r.Signer, r.PublicKey
	if got, _ := json.Marshal(r); string(got) != string(mustJSON(t, &s)) {
		t.Fatalf("golden decodes to %s", got)
	}
	e, _ := dsse.Decode(want)
	ppath := filepath.Join("testdata", "receipt_payload.golden")
	if *update {
		if err := os.WriteFile(ppath, append(e.Payload, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if wp, err := os.ReadFile(ppath); err != nil || !bytes.Equal(bytes.TrimSuffix(wp, []byte("\n")), e.Payload) {
		t.Fatalf("payload differs from %s (%v):\n%s", ppath, err, e.Payload)
	}
	const payload = `{"model":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","adapter":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","block":{"height":7,"hash":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"},"request_hash":`
	if !strings.HasPrefix(string(e.Payload), payload) {
		t.Fatalf("payload = %s", e.Payload)
	}
}

// TestGoldenTokenizer pins the payload of a receipt naming its tokenizer
// digest: the field follows "adapter"; TestGolden's receipt, which names
// none, keeps the bytes it had before the field existed.
func TestGoldenTokenizer(t *testing.T) {
	r := sample(t)
	r.Tokenizer = hexOf('d')
	env, err := Sign(testKey(), r)
	if err != nil {
		t.Fatal(err)
	}
	p := mustPayload(t, env)
	path := filepath.Join("testdata", "receipt_tokenizer_payload.golden")
	if *update {
		if err := os.WriteFile(path, append(p, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want, err := os.ReadFile(path); err != nil || !bytes.Equal(bytes.TrimSuffix(want, []byte("\n")), p) {
		t.Fatalf("payload differs from %s (%v):\n%s", path, err, p)
	}
	if want := `"adapter":"` + hexOf('b') + `","tokenizer":"` + hexOf('d') + `","block":`; !strings.Contains(string(p), want) {
		t.Fatalf("payload lacks %s: %s", want, p)
	}
	got, err := Verify(env)
	if err != nil || got.Tokenizer != r.Tokenizer {
		t.Fatalf("Verify: %v, tokenizer %q", err, got.Tokenizer)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignVerify(t *testing.T) {
	key := testKey()
	r := sample(t)
	r.Adapter, r.Block = "", nil // standalone, no adapter
	r.Time = time.Time{}
	env, err := Sign(key, r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(env)
	if err != nil {
		t.Fatal(err)
	}
	if got.Block != nil || got.Adapter != "" || got.Time.IsZero() || got.Time.Location() != time.UTC {
		t.Fatalf("got %+v", got)
	}
	if strings.Contains(string(mustPayload(t, env)), `"block"`) || strings.Contains(string(mustPayload(t, env)), `"adapter"`) {
		t.Fatalf("standalone payload carries block or adapter: %s", mustPayload(t, env))
	}
	pub := key.Public().(ed25519.PublicKey)
	if pk, _ := got.Key(); !pk.Equal(pub) {
		t.Fatal("Key is not the signer's")
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32))
	r.Signer = "" // another key's receipt
	r.PublicKey = strings.Repeat("0", 64)
	if _, err := Sign(other, r); err == nil {
		t.Fatal("Sign with a key the receipt does not name")
	}
}

func mustPayload(t *testing.T, env []byte) []byte {
	e, err := dsse.Decode(env)
	if err != nil {
		t.Fatal(err)
	}
	return e.Payload
}

// resign re-signs a changed payload with key under payload type typ.
func resign(key ed25519.PrivateKey, typ string, payload []byte) []byte {
	return dsse.Sign(key, typ, payload).Encode()
}

func TestVerifyRefuses(t *testing.T) {
	key := testKey()
	env, err := Sign(key, sample(t))
	if err != nil {
		t.Fatal(err)
	}
	payload := mustPayload(t, env)
	stranger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	swap := func(old, new string) []byte { return []byte(strings.Replace(string(payload), old, new, 1)) }
	alter := func(old, new string) []byte {
		e, _ := dsse.Decode(env)
		e.Payload = swap(old, new)
		return e.Encode()
	}
	r := sample(t)
	for _, c := range []struct {
		name  string
		env   []byte
		want  error
		field string
	}{
		{"altered model digest", alter(r.Model, hexOf('d')), ErrBadSignature, ""},
		{"altered token hash", alter(r.TokensHash, hexOf('e')), ErrBadSignature, ""},
		{"altered seed", alter(`"seed":1152921504606846976`, `"seed":1152921504606846977`), ErrBadSignature, ""},
		{"altered temperature", alter(`"temperature":0.7`, `"temperature":0`), ErrBadSignature, ""},
		{"signed by a stranger naming the node", resign(stranger, PayloadType, payload), ErrBadSignature, ""},
		{"wrong payload type", resign(key, "application/vnd.fedtune.tx+json", payload), ErrPayloadType, ""},
		{"unknown field", resign(key, PayloadType, swap(`{"model"`, `{"extra":1,"model"`)), ErrMalformed, ""},
		{"duplicate name", resign(key, PayloadType, swap(`{"model":"`+r.Model+`"`, `{"model":"`+r.Model+`","model":"`+r.Model+`"`)), ErrMalformed, ""},
		{"case-folded name", resign(key, PayloadType, swap(`"model"`, `"Model"`)), ErrMalformed, ""},
		{"not canonical", resign(key, PayloadType, swap(`{"model"`, `{ "model"`)), ErrMalformed, ""},
		{"bad model digest", resign(key, PayloadType, swap(r.Model, "AA")), ErrMalformed, "model"},
		{"bad token hash", resign(key, PayloadType, swap(r.TokensHash, hexOf('G'))), ErrMalformed, "tokens_hash"},
		{"bad top_p", resign(key, PayloadType, swap(`"top_p":0.95`, `"top_p":1.5`)), ErrMalformed, "sampling.top_p"},
		{"zero max_tokens", resign(key, PayloadType, swap(`"max_tokens":16`, `"max_tokens":0`)), ErrMalformed, "sampling.max_tokens"},
		{"signer not the key", resign(key, PayloadType, swap(`"signer":"`, `"signer":"`+hexOf('f')+`","x":"`)), ErrMalformed, ""},
		{"not JSON", []byte("hello"), ErrMalformed, ""},
	} {
		_, err := Verify(c.env)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
			continue
		}
		var fe *FieldError
		if c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) {
			t.Errorf("%s: Verify = %v, want field %s named", c.name, err, c.field)
		}
	}
	// The signer must be the key's ID.
	r.Signer = hexOf('f')
	r.PublicKey = ""
	if _, err := Sign(key, r); err == nil {
		t.Error("Sign of a receipt naming another signer")
	}
}

func TestCheckFields(t *testing.T) {
	for _, c := range []struct {
		field string
		edit  func(*Receipt)
	}{
		{"adapter", func(r *Receipt) { r.Adapter = "x" }},
		{"tokenizer", func(r *Receipt) { r.Tokenizer = hexOf('D') }},
		{"block.hash", func(r *Receipt) { r.Block.Hash = "" }},
		{"request_hash", func(r *Receipt) { r.RequestHash = "" }},
		{"prompt_hash", func(r *Receipt) { r.PromptHash = hexOf('A') }},
		{"prompt_tokens", func(r *Receipt) { r.PromptTokens = 0 }},
		{"completion_tokens", func(r *Receipt) { r.CompletionTokens = 17 }},
		{"sampling.temperature", func(r *Receipt) { r.Sampling.Temperature = -1 }},
		{"sampling.stop[0]", func(r *Receipt) { r.Sampling.Stop = []string{""} }},
		{"sampling.stop_token_ids[0]", func(r *Receipt) { r.Sampling.StopTokenIDs = []int{-1} }},
		{"time", func(r *Receipt) { r.Time = r.Time.In(time.FixedZone("x", 3600)) }},
	} {
		r := sample(t)
		r.Signer, r.PublicKey = "", ""
		c.edit(&r)
		_, err := Sign(testKey(), r)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrMalformed) {
			if c.field == "time" && err == nil {
				continue // Sign moves the time to UTC
			}
			t.Errorf("%s: Sign = %v", c.field, err)
		}
	}
}

func TestBundle(t *testing.T) {
	key := testKey()
	req := []byte(`{"model":"m","prompt":"hi"}`)
	r := sample(t)
	env, err := Sign(key, r)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBundle(env, req, []int{0, 42}, []int{1, 2, 3}, "abc")
	js, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if IsEnvelope(js) || !IsEnvelope(env) {
		t.Fatal("IsEnvelope")
	}
	got, err := DecodeBundle(js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.Check(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Bundle){
		"request":        func(b *Bundle) { b.Request = []byte(`{"model":"m","prompt":"ho"}`) },
		"prompt_ids":     func(b *Bundle) { b.PromptIDs = []int{0, 43} },
		"completion_ids": func(b *Bundle) { b.CompletionIDs = []int{1, 2, 4} },
	} {
		bb, _ := DecodeBundle(js)
		edit(bb)
		if _, err := bb.Check(); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), name) {
			t.Errorf("bundle with altered %s: %v", name, err)
		}
	}
	if _, err := DecodeBundle([]byte(`{"receipt":{},"request":"","prompt_ids":[],"x":1}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("bundle with an unknown field: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	env, err := Sign(testKey(), sample(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add(mustPayloadF(f, env))
	withTok := sample(f)
	withTok.Tokenizer = hexOf('d')
	if env, err = Sign(testKey(), withTok); err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add(mustPayloadF(f, env))
	f.Add([]byte(`{"payloadType":"application/vnd.fedtune.receipt+json","payload":"e30=","signatures":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := Verify(b); err == nil {
			if again, err := r.Encode(); err != nil || !bytes.Equal(again, mustPayload(t, b)) {
				t.Fatalf("verified receipt re-encodes differently: %v", err)
			}
		}
		r, err := Decode(b)
		if err != nil {
			return
		}
		if err := strictjson.CheckNames(b); err != nil {
			t.Fatalf("Decode accepted a payload with ambiguous names: %v", err)
		}
		again, err := r.Encode()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded payload re-encodes differently: %v", err)
		}
	})
}

func mustPayloadF(f *testing.F, env []byte) []byte {
	e, err := dsse.Decode(env)
	if err != nil {
		f.Fatal(err)
	}
	return e.Payload
}

func TestSignAnswer(t *testing.T) {
	a := Answer{Model: hexOf('a'), Request: []byte(`{"prompt":"x"}`), PromptIDs: []int{5, 6}, CompletionIDs: []int{7},
		Sampling: Sampling{MaxTokens: 4}}
	env, b, err := SignAnswer(testKey(), a, "seven")
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.Check()
	if err != nil {
		t.Fatal(err)
	}
	if r2, err := Verify(env); err != nil || r2.Block != nil || r2.TokensHash != r.TokensHash || r.CompletionTokens != 1 || r.PromptTokens != 2 {
		t.Fatalf("%+v %v", r, err)
	}
	a.Request, a.RequestHash = nil, RequestHash(a.Request)
	if r2, err := New(a); err != nil || r2.RequestHash != r.RequestHash {
		t.Fatalf("New with RequestHash: %+v %v", r2, err)
	}
	a.PromptIDs = nil
	if _, _, err := SignAnswer(testKey(), a, ""); err == nil {
		t.Fatal("an answer without a prompt signed")
	}
}

func FuzzDecodeBundle(f *testing.F) {
	env, b, err := SignAnswer(testKey(), Answer{Model: hexOf('a'), Request: []byte(`{}`), PromptIDs: []int{1}, CompletionIDs: []int{2},
		Sampling: Sampling{MaxTokens: 1}}, "x")
	if err != nil {
		f.Fatal(err)
	}
	js, _ := b.Encode()
	f.Add(js)
	f.Add(env)
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBundle(data)
		if err != nil {
			return
		}
		if r, err := b.Check(); err == nil {
			if h, _ := TokensHash(b.PromptIDs); h != r.PromptHash || RequestHash(b.Request) != r.RequestHash {
				t.Fatal("Check passed a bundle whose prompt or request does not hash to the receipt's")
			}
		}
	})
}

func TestParse(t *testing.T) {
	env, b, err := SignAnswer(testKey(), Answer{Model: hexOf('a'), Request: []byte(`{}`), PromptIDs: []int{1}, Sampling: Sampling{MaxTokens: 1}}, "")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := b.Encode()
	var indented bytes.Buffer
	_ = json.Indent(&indented, env, "", "  ")
	for name, c := range map[string]struct {
		data   []byte
		bundle bool
	}{
		"envelope":          {env, false},
		"indented envelope": {indented.Bytes(), false},
		"base64 envelope":   {[]byte(base64.StdEncoding.EncodeToString(env) + "\n"), false},
		"bundle":            {js, true},
	} {
		got, gb, err := Parse(c.data)
		if err != nil || !bytes.Equal(got, env) || (gb != nil) != c.bundle {
			t.Errorf("%s: Parse = %q, bundle %v, %v", name, got, gb != nil, err)
		}
	}
	for _, bad := range []string{"", "!!", `{"payloadType":`, `[]`} {
		if _, _, err := Parse([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v", bad, err)
		}
	}
}
