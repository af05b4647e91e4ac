package provenancetest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSchemasAsNoted: every shipped schema hashes to the SHA-256 the
// README notes beside its source, and compiles.
func TestSchemasAsNoted(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("testdata", "schemas", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]+\\.json)` \\|.*\\| `([0-9a-f]{64})` \\|$")
	noted := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		noted[m[1]] = m[2]
	}
	for _, name := range files {
		b, err := os.ReadFile(filepath.Join("testdata", "schemas", name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); noted[name] != got {
			t.Errorf("%s hashes to %s; the README notes %q", name, got, noted[name])
		}
	}
	if len(noted) != len(files) {
		t.Errorf("the README notes %d schemas, %d are shipped", len(noted), len(files))
	}
	once.Do(load)
	if loadErr != nil {
		t.Fatal(loadErr)
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct{ format, doc, want string }{
		{"slsa", `{}`, "unknown provenance format"},
		{"spdx", `not json`, "not JSON"},
		{"cyclonedx", `{"bomFormat":"CycloneDX"}`, "CycloneDX 1.6 schema"},
		{"spdx", `{"@context":"https://spdx.org/rdf/3.0.1/spdx-context.jsonld","@graph":[{"type":"CreationInfo","@id":"_:c"}]}`, "SPDX 3.0.1 schema"},
		{"in-toto", `{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"k","sig":"AA=="}]}`, "in-toto Statement v1 schema"},
		{"in-toto", `{"payloadType":"application/vnd.in-toto+json","payload":"!!","signatures":[]}`, "DSSE envelope schema"},
	} {
		if err := Validate(tc.format, []byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%s, %s) = %v, want an error saying %q", tc.format, tc.doc, err, tc.want)
		}
	}
}
