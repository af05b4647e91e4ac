package provenancetest

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/dlclark/regexp2/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed testdata/schemas/*.json
var schemaFS embed.FS

// The schemas, by the URL each is known under ($id where it has one).
const (
	SPDX         = "https://spdx.org/schema/3.0.1/spdx-json-schema.json"
	CycloneDX    = "http://cyclonedx.org/schema/bom-1.6.schema.json"
	InToto       = "https://github.com/fedtune/fedtune/schemas/intoto-statement-v1.schema.json"
	ModelSigning = "https://github.com/fedtune/fedtune/schemas/model-signing-v1.0.schema.json"
	DSSE         = "https://github.com/fedtune/fedtune/schemas/dsse-envelope.schema.json"
)

var files = map[string]string{
	SPDX:      "spdx-3.0.1.schema.json",
	CycloneDX: "bom-1.6.schema.json",
	"http://cyclonedx.org/schema/spdx.schema.json":     "spdx.schema.json",
	"http://cyclonedx.org/schema/jsf-0.82.schema.json": "jsf-0.82.schema.json",
	InToto:       "intoto-statement-v1.schema.json",
	ModelSigning: "model-signing-v1.0.schema.json",
	DSSE:         "dsse-envelope.schema.json",
}

var (
	once     sync.Once
	compiled map[string]*jsonschema.Schema
	loadErr  error
)

// ecma is a jsonschema regexp engine that understands the ECMAScript
// patterns JSON Schema allows (the SPDX schema uses lookahead).
type ecma struct{ re *regexp2.Regexp }

func (e ecma) MatchString(s string) bool {
	ok, err := e.re.MatchString(s)
	if err != nil {
		// A pattern that backtracks past the timeout: a schema (or a
		// document) the validator cannot judge; say which, loudly.
		panic(fmt.Sprintf("provenancetest: pattern %q on a %d-byte string: %v", e.re.String(), len(s), err))
	}
	return ok
}

func (e ecma) String() string { return e.re.String() }

func load() {
	c := jsonschema.NewCompiler()
	c.UseRegexpEngine(func(s string) (jsonschema.Regexp, error) {
		re, err := regexp2.Compile(s)
		if err != nil {
			return nil, err
		}
		re.MatchTimeout = 5 * time.Second
		return ecma{re}, nil
	})
	c.UseLoader(noLoader{})
	for url, name := range files {
		b, err := schemaFS.ReadFile("testdata/schemas/" + name)
		if err != nil {
			loadErr = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			loadErr = fmt.Errorf("schema %s: %w", name, err)
			return
		}
		if err := c.AddResource(url, doc); err != nil {
			loadErr = fmt.Errorf("schema %s: %w", name, err)
			return
		}
	}
	compiled = map[string]*jsonschema.Schema{}
	for _, url := range []string{SPDX, CycloneDX, InToto, ModelSigning, DSSE} {
		s, err := c.Compile(url)
		if err != nil {
			loadErr = fmt.Errorf("compile %s: %w", files[url], err)
			return
		}
		compiled[url] = s
	}
}

// noLoader refuses every URL not added as a resource: nothing is fetched.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not shipped in testdata/schemas", url)
}

// Against validates doc (JSON) against the schema known under url.
func Against(url string, doc []byte) error {
	once.Do(load)
	if loadErr != nil {
		return loadErr
	}
	s := compiled[url]
	if s == nil {
		return fmt.Errorf("no schema %s", url)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("document is not JSON: %w", err)
	}
	return s.Validate(inst)
}

// Validate checks a document audit.WriteProvenance wrote in format
// ("in-toto", "spdx" or "cyclonedx"). For in-toto that is the DSSE
// envelope, its payload as an in-toto Statement v1, and the Statement's
// predicate as an OpenSSF model signing v1.0 predicate.
func Validate(format string, doc []byte) error {
	switch format {
	case "spdx":
		return wrap("SPDX 3.0.1", Against(SPDX, doc))
	case "cyclonedx":
		return wrap("CycloneDX 1.6", Against(CycloneDX, doc))
	case "in-toto":
		if err := Against(DSSE, doc); err != nil {
			return wrap("DSSE envelope", err)
		}
		var env struct {
			Payload string `json:"payload"`
		}
		if err := json.Unmarshal(doc, &env); err != nil {
			return err
		}
		st, err := base64.StdEncoding.DecodeString(env.Payload)
		if err != nil {
			return fmt.Errorf("DSSE payload: %w", err)
		}
		return ValidateStatement(st)
	}
	return fmt.Errorf("unknown provenance format %q", format)
}

// ValidateStatement checks an in-toto Statement v1 and, when its
// predicateType is the OpenSSF model signing v1.0 one, its predicate.
func ValidateStatement(st []byte) error {
	if err := Against(InToto, st); err != nil {
		return wrap("in-toto Statement v1", err)
	}
	var s struct {
		PredicateType string          `json:"predicateType"`
		Predicate     json.RawMessage `json:"predicate"`
	}
	if err := json.Unmarshal(st, &s); err != nil {
		return err
	}
	if s.PredicateType != "https://model_signing/signature/v1.0" {
		return nil
	}
	return wrap("model signing v1.0 predicate", Against(ModelSigning, s.Predicate))
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s schema: %w", what, err)
}
