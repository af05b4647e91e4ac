package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/audit/provenancetest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/ledger"
)

// auditorKey is the fixed key the golden in-toto envelope is signed with
// (ed25519 signatures are deterministic).
var auditorKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// testProvenance is the provenance of the test chain's final model, read
// from its export, with one attestation on its first dataset.
func testProvenance(t *testing.T) (*Provenance, *testChain) {
	t.Helper()
	c := newTestChain(t)
	p, err := ProvenanceFromExport(context.Background(), c.export(t), c.models[1])
	if err != nil {
		t.Fatal(err)
	}
	if p.ChainID != chainID || len(p.Lineage.Rounds) != 2 || len(p.Lineage.Datasets) == 0 || p.Time.IsZero() {
		t.Fatalf("provenance: chain %q, %d rounds, %d datasets, time %s", p.ChainID, len(p.Lineage.Rounds), len(p.Lineage.Datasets), p.Time)
	}
	p.Attestations = []DatasetAttestation{{Dataset: p.Lineage.Datasets[0].Digest, Auditor: c.outsider.id, Kind: "pii-scan",
		Result: "pass", Detail: "0 findings", Height: 4, TxHash: strings.Repeat("ab", 32), Time: p.Time.Add(-time.Minute)}}
	// The ledger's record of a second dataset's attestation (as FSM.Dataset
	// fills it from a DatasetAttested tx), and a third dataset published
	// under a licence with obligations: the documents carry both.
	ds := p.Lineage.Datasets
	ds[1].Attestations = []ledger.DatasetAttestation{{Dataset: ds[1].Digest, Kind: "pii-scan", Auditor: c.outsider.id,
		Result: ledger.AttestationResult{Pass: false, Samples: 12, Findings: 2, Counts: map[string]uint64{"email": 1, "ip": 1}},
		Tool:   ledger.AttestationTool{Name: "fedtune dataset scan", Digest: strings.Repeat("cd", 32)}, Report: strings.Repeat("ef", 32),
		Height: ds[1].Height, TxHash: strings.Repeat("12", 32)}}
	ds[2].Published, ds[2].Format, ds[2].Licence, ds[2].Card = true, "jsonl", "CC-BY-SA-4.0", strings.Repeat("34", 32)
	ds[2].Shards = []dspub.Shard{{Digest: strings.Repeat("56", 32), First: 0, Samples: 8, Bytes: 800}, {Digest: strings.Repeat("78", 32), First: 8, Samples: 4, Bytes: 400}}
	return p, c
}

func writeProvenance(t *testing.T, p *Provenance, format string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteProvenance(&b, p, format, auditorKey); err != nil {
		t.Fatalf("%s: %v", format, err)
	}
	return b.Bytes()
}

func TestProvenanceGoldenAndSchemas(t *testing.T) {
	p, _ := testProvenance(t)
	for _, format := range ProvenanceFormats {
		t.Run(format, func(t *testing.T) {
			out := writeProvenance(t, p, format)
			golden := filepath.Join("testdata", "provenance."+format+".json")
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if !bytes.Equal(out, want) {
				t.Fatalf("%s output differs from %s (run with -update if intended):\n%s", format, golden, out)
			}
			if err := provenancetest.Validate(format, out); err != nil {
				t.Fatalf("%s does not validate against its schema: %v", format, err)
			}
		})
	}
}

// TestProvenanceInToto checks the statement as a model-signing verifier
// and a DSSE verifier would: the envelope verifies under the auditor's key,
// the one subject's sha256 is the SHA-256 of the resources' raw digests in
// name order, and the resources are the model's files.
func TestProvenanceInToto(t *testing.T) {
	p, c := testProvenance(t)
	env, err := dsse.Decode(bytes.TrimSuffix(writeProvenance(t, p, "in-toto"), []byte("\n")))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Verify(auditorKey.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	if err := env.Verify(other.Public().(ed25519.PublicKey)); err == nil {
		t.Fatal("the envelope verifies under another key")
	}
	if env.PayloadType != InTotoPayloadType {
		t.Fatalf("payload type %q", env.PayloadType)
	}
	var st struct {
		Type    string `json:"_type"`
		Subject []struct {
			Name   string            `json:"name"`
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
		PredicateType string `json:"predicateType"`
		Predicate     struct {
			Resources []struct{ Name, Algorithm, Digest string } `json:"resources"`
			Fedtune   struct {
				ChainID string `json:"chain_id"`
				Rounds  []struct {
					Round        uint64            `json:"round"`
					Contributors []json.RawMessage `json:"contributors"`
				} `json:"rounds"`
				Attestations []DatasetAttestation `json:"attestations"`
			} `json:"fedtune"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(env.Payload, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != InTotoStatementType || st.PredicateType != ModelSigningPredicateType || len(st.Subject) != 1 {
		t.Fatalf("statement %s / %s with %d subjects", st.Type, st.PredicateType, len(st.Subject))
	}
	h := sha256.New()
	found := false
	for i, r := range st.Predicate.Resources {
		if i > 0 && st.Predicate.Resources[i-1].Name >= r.Name {
			t.Errorf("resources not in name order: %s before %s", st.Predicate.Resources[i-1].Name, r.Name)
		}
		raw, _ := hex.DecodeString(r.Digest)
		h.Write(raw)
		if r.Name == "model.safetensors" && r.Digest == c.models[1] && r.Algorithm == "sha256" {
			found = true
		}
	}
	if !found {
		t.Errorf("resources %v do not list model.safetensors with the model digest %s", st.Predicate.Resources, c.models[1])
	}
	if got, want := st.Subject[0].Digest["sha256"], hex.EncodeToString(h.Sum(nil)); got != want {
		t.Errorf("subject sha256 %s, want the SHA-256 of the resource digests %s", got, want)
	}
	f := st.Predicate.Fedtune
	if f.ChainID != chainID || len(f.Rounds) != 2 || f.Rounds[0].Round != 1 || len(f.Rounds[0].Contributors) != 3 || len(f.Attestations) != 2 {
		t.Errorf("fedtune lineage: chain %q, rounds %+v, attestations %d", f.ChainID, f.Rounds, len(f.Attestations))
	}
}

// TestProvenanceDeterministic: the same lineage in another order gives the
// same bytes; the block time is the only time in the documents.
func TestProvenanceDeterministic(t *testing.T) {
	p, _ := testProvenance(t)
	q := *p
	l := *p.Lineage
	l.Datasets = append([]ledger.Dataset(nil), l.Datasets...)
	for i, j := 0, len(l.Datasets)-1; i < j; i, j = i+1, j-1 {
		l.Datasets[i], l.Datasets[j] = l.Datasets[j], l.Datasets[i]
	}
	l.Rounds = append([]ledger.LineageRound(nil), l.Rounds...)
	for i := range l.Rounds {
		cs := append([]ledger.LineageContribution(nil), l.Rounds[i].Contributors...)
		for a, b := 0, len(cs)-1; a < b; a, b = a+1, b-1 {
			cs[a], cs[b] = cs[b], cs[a]
		}
		l.Rounds[i].Contributors = cs
	}
	q.Lineage = &l
	for _, format := range ProvenanceFormats {
		if a, b := writeProvenance(t, p, format), writeProvenance(t, &q, format); !bytes.Equal(a, b) {
			t.Errorf("%s: reordering the lineage's datasets and contributors changes the document", format)
		}
		later := *p
		later.Time = p.Time.Add(time.Hour)
		a, b := writeProvenance(t, p, format), writeProvenance(t, &later, format)
		if bytes.Equal(a, b) {
			t.Errorf("%s: the block time does not reach the document", format)
		}
		if !bytes.Contains(a, []byte(p.Time.UTC().Format("2006-01-02T15:04:05Z"))) && format != "in-toto" {
			// (the in-toto statement carries it inside its base64 payload)
			t.Errorf("%s: the document does not carry the block time %s", format, p.Time)
		}
	}
}

// TestProvenanceSchemaNegative: each document with one required field
// removed or one value broken fails its schema, so the validation above
// can fail.
func TestProvenanceSchemaNegative(t *testing.T) {
	p, _ := testProvenance(t)
	docs := map[string]map[string]any{}
	for _, format := range ProvenanceFormats {
		var m map[string]any
		if err := json.Unmarshal(writeProvenance(t, p, format), &m); err != nil {
			t.Fatal(err)
		}
		docs[format] = m
	}
	statement := func() map[string]any {
		raw, _ := base64Decode(docs["in-toto"]["payload"].(string))
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	graphOf := func(m map[string]any, typ string) map[string]any {
		for _, o := range m["@graph"].([]any) {
			if o.(map[string]any)["type"] == typ {
				return o.(map[string]any)
			}
		}
		t.Fatalf("no %s in the SPDX graph", typ)
		return nil
	}
	model := func(m map[string]any) map[string]any {
		return m["metadata"].(map[string]any)["component"].(map[string]any)
	}
	for _, tc := range []struct {
		name, format string
		mutate       func(m map[string]any) []byte
	}{
		{"spdx without @context", "spdx", func(m map[string]any) []byte { delete(m, "@context"); return nil }},
		{"spdx CreationInfo without created", "spdx", func(m map[string]any) []byte { delete(graphOf(m, "CreationInfo"), "created"); return nil }},
		{"spdx CreationInfo without specVersion", "spdx", func(m map[string]any) []byte { delete(graphOf(m, "CreationInfo"), "specVersion"); return nil }},
		{"spdx Relationship without relationshipType", "spdx", func(m map[string]any) []byte {
			delete(graphOf(m, "Relationship"), "relationshipType")
			return nil
		}},
		{"spdx Build without buildType", "spdx", func(m map[string]any) []byte { delete(graphOf(m, "build_Build"), "build_buildType"); return nil }},
		{"spdx AIPackage with an unknown purpose", "spdx", func(m map[string]any) []byte {
			graphOf(m, "ai_AIPackage")["software_primaryPurpose"] = "weights"
			return nil
		}},
		{"spdx DatasetPackage with no dataset type", "spdx", func(m map[string]any) []byte {
			graphOf(m, "dataset_DatasetPackage")["dataset_datasetType"] = []any{}
			return nil
		}},
		{"spdx element with a blank-node spdxId", "spdx", func(m map[string]any) []byte { graphOf(m, "ai_AIPackage")["spdxId"] = "_:model"; return nil }},
		{"cyclonedx without bomFormat", "cyclonedx", func(m map[string]any) []byte { delete(m, "bomFormat"); return nil }},
		{"cyclonedx model without name", "cyclonedx", func(m map[string]any) []byte { delete(model(m), "name"); return nil }},
		{"cyclonedx model of an unknown type", "cyclonedx", func(m map[string]any) []byte { model(m)["type"] = "ml-model"; return nil }},
		{"cyclonedx hash algorithm misspelled", "cyclonedx", func(m map[string]any) []byte {
			model(m)["hashes"].([]any)[0].(map[string]any)["alg"] = "sha256"
			return nil
		}},
		{"cyclonedx serial number not a UUID URN", "cyclonedx", func(m map[string]any) []byte { m["serialNumber"] = "fedtune-1"; return nil }},
		{"cyclonedx modelCard with an unknown field", "cyclonedx", func(m map[string]any) []byte {
			model(m)["modelCard"].(map[string]any)["weights"] = "x"
			return nil
		}},
		{"in-toto envelope without signatures", "in-toto", func(m map[string]any) []byte { delete(m, "signatures"); return nil }},
		{"in-toto statement without predicateType", "in-toto", func(m map[string]any) []byte {
			st := statement()
			delete(st, "predicateType")
			return reenvelope(t, m, st)
		}},
		{"in-toto subject without digest", "in-toto", func(m map[string]any) []byte {
			st := statement()
			delete(st["subject"].([]any)[0].(map[string]any), "digest")
			return reenvelope(t, m, st)
		}},
		{"in-toto wrong _type", "in-toto", func(m map[string]any) []byte {
			st := statement()
			st["_type"] = "https://in-toto.io/Statement/v0.1"
			return reenvelope(t, m, st)
		}},
		{"model-signing resource without digest", "in-toto", func(m map[string]any) []byte {
			st := statement()
			delete(st["predicate"].(map[string]any)["resources"].([]any)[0].(map[string]any), "digest")
			return reenvelope(t, m, st)
		}},
		{"model-signing without serialization", "in-toto", func(m map[string]any) []byte {
			st := statement()
			delete(st["predicate"].(map[string]any), "serialization")
			return reenvelope(t, m, st)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			raw, _ := json.Marshal(docs[tc.format])
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			if err := provenancetest.Validate(tc.format, raw); err != nil {
				t.Fatalf("the unmodified document fails: %v", err)
			}
			doc := tc.mutate(m)
			if doc == nil {
				doc, _ = json.Marshal(m)
			}
			if err := provenancetest.Validate(tc.format, doc); err == nil {
				t.Fatal("the broken document validates")
			} else {
				t.Logf("rejected: %.300s", err)
			}
		})
	}
}

func base64Decode(s string) ([]byte, error) {
	var b []byte
	err := json.Unmarshal([]byte(`"`+s+`"`), &b)
	return b, err
}

// reenvelope puts st back into envelope m as its payload.
func reenvelope(t *testing.T, m map[string]any, st map[string]any) []byte {
	t.Helper()
	payload, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := json.Marshal(payload) // a quoted base64 string
	m["payload"] = strings.Trim(string(enc), `"`)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestProvenanceBadInput: what is missing is named, and nothing is
// written.
func TestProvenanceBadInput(t *testing.T) {
	p, _ := testProvenance(t)
	noTime := *p
	noTime.Time = time.Time{}
	badModel := *p
	l := *p.Lineage
	l.Model.Digest = "xyz"
	badModel.Lineage = &l
	strange := *p
	strange.Attestations = []DatasetAttestation{{Dataset: strings.Repeat("0", 64), Auditor: "a", Kind: "pii-scan"}}
	for _, tc := range []struct {
		name   string
		p      *Provenance
		format string
		key    ed25519.PrivateKey
		want   string
	}{
		{"no lineage", &Provenance{Time: p.Time}, "spdx", nil, "no lineage"},
		{"no block time", &noTime, "cyclonedx", nil, "no block time"},
		{"bad model digest", &badModel, "spdx", nil, "model digest"},
		{"attestation of a dataset not in the lineage", &strange, "cyclonedx", nil, "not in the lineage"},
		{"in-toto without a key", p, "in-toto", nil, "auditor's key"},
		{"unknown format", p, "slsa", auditorKey, "unknown format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			err := WriteProvenance(&b, tc.p, tc.format, tc.key)
			if err == nil || !errors.Is(err, ErrProvenance) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrProvenance saying %q", err, tc.want)
			}
			if b.Len() != 0 {
				t.Fatalf("wrote %d bytes on error", b.Len())
			}
		})
	}
}

// FuzzProvenance: whatever text the ledger's records carry (names,
// licences, sources, a job ID, a rejection reason, a strategy parameter),
// every provenance document is built, is valid against its schema, and is
// the same on a second build.
func FuzzProvenance(f *testing.F) {
	f.Add("tiny", "Apache-2.0", "hf://x", "data", "CC-BY-SA-4.0", "job", "norm too large", "lr", "0.1")
	f.Add(`x"},{"type":"Relationship"`, "MIT) OR (GPL-3.0", "_:b", "</script>", "(MIT", "a:b/c d", "", "_:creationinfo", "urn:x:y")
	f.Add("", "", "", "", "", "", "", "", "")
	f.Add("日本", "MIT AND (Apache-2.0 OR BSD-3-Clause)", "javascript:alert(1)", "%00", "LicenseRef-x WITH y", "%2F", "\u2028", "k", "v")
	d := func(s string) string { return digestOf(s) }
	fuzzing := flag.Lookup("test.fuzz").Value.String() != ""
	build := func(name, licence, source, dsName, dsLicence, job, reason, key, value string) *Provenance {
		l := &ledger.Lineage{
			Model: ledger.Model{Digest: d("model"), Height: 9, Registrar: "agg"},
			Base:  ledger.Model{Digest: d("base"), Name: name, Licence: licence, Source: source, Registrar: "coord", Height: 1},
			Rounds: []ledger.LineageRound{{JobID: job, Round: 1, ConfigDigest: d("cfg"), BaseModel: d("base"), ModelDigest: d("model"),
				Strategy: "fedavg", Params: map[string]string{key: value}, OpenedHeight: 3, CommittedHeight: 9, Aggregator: "agg",
				Contributors: []ledger.LineageContribution{{Trainer: "t1", UpdateDigest: d("u1"), DatasetDigest: d("ds"), Samples: 3, Weight: 1}},
				Rejected:     []ledger.RejectedUpdate{{Trainer: "t2", UpdateDigest: d("u2"), Reason: reason}}}},
			Datasets: []ledger.Dataset{{Digest: d("ds"), Name: dsName, Licence: dsLicence, Source: source, Samples: 3, Root: d("root"), Owner: "t1", Height: 2}},
		}
		return &Provenance{Lineage: l, ChainID: job, Time: time.Unix(1700000000, 0),
			Attestations: []DatasetAttestation{{Dataset: d("ds"), Auditor: name, Kind: key, Result: value, Detail: reason, Height: 4}}}
	}
	var plain bytes.Buffer
	if err := WriteProvenance(&plain, build("a", "MIT", "s", "d", "MIT", "j", "r", "k", "v"), "spdx", nil); err != nil {
		f.Fatal(err)
	}
	plainShape := spdxShape(f, plain.Bytes())
	f.Fuzz(func(t *testing.T, name, licence, source, dsName, dsLicence, job, reason, key, value string) {
		if len(name)+len(licence)+len(source)+len(dsName)+len(dsLicence)+len(job)+len(reason)+len(key)+len(value) > 4096 {
			return
		}
		p := build(name, licence, source, dsName, dsLicence, job, reason, key, value)
		for _, format := range ProvenanceFormats {
			a, b := writeProvenance(t, p, format), writeProvenance(t, p, format)
			if !bytes.Equal(a, b) {
				t.Fatalf("%s: two builds differ", format)
			}
			if format == "spdx" && fuzzing {
				// The SPDX schema takes seconds a document under the
				// fuzzer's instrumentation: check the structure instead
				// (the same elements as for plain text); the seeds and
				// the adversarial suite check the schema.
				if n := spdxShape(t, a); n != plainShape {
					t.Fatalf("spdx: %s, for plain text %s:\n%s", n, plainShape, a)
				}
				continue
			}
			if err := provenancetest.Validate(format, a); err != nil {
				t.Fatalf("%s: %v\n%s", format, err, a)
			}
		}
	})
}

// spdxShape counts an SPDX document's elements by type, for the types
// whose number does not depend on the records' text (agents and licence
// elements are shared between equal texts; an empty licence has none).
func spdxShape(t testing.TB, doc []byte) string {
	t.Helper()
	var m struct {
		Graph []struct {
			Type string `json:"type"`
		} `json:"@graph"`
	}
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatalf("spdx is not JSON: %v", err)
	}
	n := map[string]int{}
	for _, e := range m.Graph {
		n[e.Type]++
	}
	return fmt.Sprintf("CreationInfo=%d SpdxDocument=%d ai_AIPackage=%d dataset_DatasetPackage=%d build_Build=%d Relationship=%d Annotation=%d",
		n["CreationInfo"], n["SpdxDocument"], n["ai_AIPackage"], n["dataset_DatasetPackage"], n["build_Build"], n["Relationship"], n["Annotation"])
}

// TestProvenanceBaseModel: the provenance of a registered base model
// imported from a published folder (no rounds, no datasets) names its
// source files, in the model-signing resources too, and validates.
func TestProvenanceBaseModel(t *testing.T) {
	m := ledger.Model{Digest: digestOf("weights"), Name: "tiny-llama", Licence: "Apache-2.0", Source: "https://huggingface.co/x/tiny",
		Registrar: "coord", Height: 2, Sources: []ledger.SourceFile{
			{Path: "model.safetensors", Size: 10, SHA256: digestOf("st")},
			{Path: "config.json", Size: 5, SHA256: digestOf("cfg")},
			{Path: "tokenizer.json", Size: 7, SHA256: digestOf("tok")},
		}}
	p := &Provenance{Lineage: &ledger.Lineage{Model: m, Base: m}, ChainID: "c", Time: time.Unix(1700000000, 0),
		BlockTimes: map[uint64]time.Time{2: time.Unix(1700000000, 0)}}
	for _, format := range ProvenanceFormats {
		doc := writeProvenance(t, p, format)
		if err := provenancetest.Validate(format, doc); err != nil {
			t.Fatalf("%s: %v\n%s", format, err, doc)
		}
		if format == "in-toto" {
			env, err := dsse.Decode(bytes.TrimSpace(doc))
			if err != nil {
				t.Fatal(err)
			}
			var st struct {
				Predicate struct {
					Resources []struct{ Name, Digest string } `json:"resources"`
				} `json:"predicate"`
			}
			if err := json.Unmarshal(env.Payload, &st); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, r := range st.Predicate.Resources {
				got[r.Name] = r.Digest
			}
			for _, f := range m.Sources {
				if got[f.Path] != f.SHA256 {
					t.Errorf("in-toto resources %v do not list %s with its SHA-256 %s", got, f.Path, f.SHA256)
				}
			}
			if len(got) != len(m.Sources) {
				t.Errorf("in-toto resources %v, want the %d source files", got, len(m.Sources))
			}
		}
	}
}

// TestProvenanceCarriesLedgerAttestationsAndPublished: every format
// carries the attestation the ledger records on a dataset (its tx, its
// tool and report digests), a published dataset's manifest, shard and card
// digests, and its licence's obligations; with the ledger's attestation
// gone, its tx is gone from every document.
func TestProvenanceCarriesLedgerAttestationsAndPublished(t *testing.T) {
	p, _ := testProvenance(t)
	ds := p.Lineage.Datasets
	att := ds[1].Attestations[0]
	want := []string{att.TxHash, att.Tool.Digest, att.Report, ds[2].Digest, ds[2].Card, ds[2].Shards[0].Digest, ds[2].Shards[1].Digest, "share-alike"}
	for _, format := range ProvenanceFormats {
		out := writeProvenance(t, p, format)
		if format == "in-toto" {
			env, err := dsse.Decode(bytes.TrimSuffix(out, []byte("\n")))
			if err != nil {
				t.Fatal(err)
			}
			out = env.Payload
		}
		for _, w := range want {
			if !bytes.Contains(out, []byte(w)) {
				t.Errorf("%s: the document does not carry %q", format, w)
			}
		}
		q := *p
		l := *p.Lineage
		l.Datasets = slices.Clone(l.Datasets)
		l.Datasets[1].Attestations = nil
		q.Lineage = &l
		out = writeProvenance(t, &q, format)
		if format == "in-toto" {
			env, _ := dsse.Decode(bytes.TrimSuffix(out, []byte("\n")))
			out = env.Payload
		}
		if bytes.Contains(out, []byte(att.TxHash)) {
			t.Errorf("%s: the attestation's tx is still there after the ledger's attestation is gone", format)
		}
	}
}
