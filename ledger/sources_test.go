package ledger

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestModelRegisteredSources: source hashes are checked field by field, and
// a tx without them encodes as before the field existed.
func TestModelRegisteredSources(t *testing.T) {
	a := newActor("a", RoleCoordinator)
	good := []SourceFile{
		{Path: "config.json", Size: 700, SHA256: hexDigest("c")},
		{Path: "model-00001-of-00002.safetensors", Size: 1 << 30, SHA256: hexDigest("s1")},
		{Path: "model-00002-of-00002.safetensors", Size: 1 << 20, SHA256: hexDigest("s2")},
	}
	body := func(src []SourceFile) ModelRegistered {
		return ModelRegistered{Digest: hexDigest("m"), Name: "TinyLlama", Licence: "Apache-2.0", Source: "hf://TinyLlama", Sources: src}
	}
	raw, err := SignTx(a.key, testChain, 1, body(good))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := DecodeTx(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := tx.Body.(ModelRegistered).Sources; len(got) != 3 || got[1] != good[1] {
		t.Errorf("sources read back as %+v", got)
	}
	// Without sources: no "sources" key at all.
	b, _ := json.Marshal(body(nil))
	if strings.Contains(string(b), "sources") {
		t.Errorf("empty sources encoded: %s", b)
	}
	with := func(f func(s []SourceFile) []SourceFile) []SourceFile {
		s := append([]SourceFile(nil), good...)
		return f(s)
	}
	for name, tc := range map[string]struct {
		src  []SourceFile
		want string
	}{
		"short sha256":   {with(func(s []SourceFile) []SourceFile { s[0].SHA256 = s[0].SHA256[:63]; return s }), "sources[0].sha256"},
		"upper sha256":   {with(func(s []SourceFile) []SourceFile { s[1].SHA256 = strings.ToUpper(s[1].SHA256); return s }), "sources[1].sha256"},
		"no sha256":      {with(func(s []SourceFile) []SourceFile { s[2].SHA256 = ""; return s }), "sources[2].sha256"},
		"empty path":     {with(func(s []SourceFile) []SourceFile { s[0].Path = ""; return s }), "sources[0].path is required"},
		"traversal":      {with(func(s []SourceFile) []SourceFile { s[0].Path = "../config.json"; return s }), "clean relative path"},
		"absolute":       {with(func(s []SourceFile) []SourceFile { s[0].Path = "/etc/passwd"; return s }), "clean relative path"},
		"backslash":      {with(func(s []SourceFile) []SourceFile { s[0].Path = `a\b`; return s }), "clean relative path"},
		"dot element":    {with(func(s []SourceFile) []SourceFile { s[0].Path = "./config.json"; return s }), "clean relative path"},
		"control char":   {with(func(s []SourceFile) []SourceFile { s[0].Path = "con\x00fig.json"; return s }), "sources[0].path"},
		"unsorted":       {with(func(s []SourceFile) []SourceFile { s[0], s[1] = s[1], s[0]; return s }), "sorted by path"},
		"duplicate path": {with(func(s []SourceFile) []SourceFile { s[2].Path = s[1].Path; return s }), "each path once"},
		"too many":       {make([]SourceFile, MaxSourceFiles+1), "limit"},
	} {
		if _, err := SignTx(a.key, testChain, 1, body(tc.src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", name, err, tc.want)
		}
	}
}

// TestModelRegisteredTokenizer: the tokenizer digest is optional, checked
// when given, kept by the FSM's record, and a tx without it encodes as
// before the field existed.
func TestModelRegisteredTokenizer(t *testing.T) {
	a := newActor("a", RoleCoordinator)
	body := ModelRegistered{Digest: hexDigest("m"), Name: "m", Licence: "l", Source: "s"}
	b, _ := json.Marshal(body)
	if want := `{"digest":"` + hexDigest("m") + `","name":"m","licence":"l","source":"s"}`; string(b) != want {
		t.Errorf("without a tokenizer digest: %s, want %s", b, want)
	}
	body.Tokenizer = hexDigest("tok")
	raw, err := SignTx(a.key, testChain, 1, body)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := DecodeTx(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := tx.Body.(ModelRegistered).Tokenizer; got != body.Tokenizer {
		t.Errorf("tokenizer read back as %q", got)
	}
	for name, bad := range map[string]string{"short": body.Tokenizer[:63], "upper": strings.ToUpper(body.Tokenizer), "not hex": strings.Repeat("z", 64)} {
		body.Tokenizer = bad
		if _, err := SignTx(a.key, testChain, 1, body); err == nil || !strings.Contains(err.Error(), "tokenizer") {
			t.Errorf("%s tokenizer digest: err %v, want it named", name, err)
		}
	}
}
