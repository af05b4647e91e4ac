package ledger

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/dsse"
)

func testPredicate() AttestationPredicate {
	return AttestationPredicate{Kind: KindPIIScan, Result: AttestationResult{Pass: true, Samples: 12,
		Counts: map[string]uint64{"email": 0, "phone": 0}}, Tool: AttestationTool{Name: "fedtune dataset scan", Digest: hexDigest("tool")},
		Report: hexDigest("report")}
}

// attestedBy builds a DatasetAttested of dataset whose statement key signs.
func attestedBy(t testing.TB, key ed25519.PrivateKey, dataset string, p AttestationPredicate) DatasetAttested {
	t.Helper()
	st, err := SignStatement(key, NewStatement(dataset, "benign-data", p))
	if err != nil {
		t.Fatal(err)
	}
	return DatasetAttested{Dataset: dataset, Predicate: p, Statement: st}
}

func TestDatasetAttestedValidate(t *testing.T) {
	c := newCast()
	d := hexDigest("d")
	good := attestedBy(t, c.auditor.key, d, testPredicate())
	if err := validateBody(good); err != nil {
		t.Fatalf("good attestation refused: %v", err)
	}
	failing := testPredicate()
	failing.Result.Pass, failing.Result.Findings, failing.Result.Counts = false, 3, map[string]uint64{"email": 3}
	if err := validateBody(attestedBy(t, c.auditor.key, d, failing)); err != nil {
		t.Fatalf("failing attestation refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(b *DatasetAttested)
		want string
	}{
		{"bad dataset", func(b *DatasetAttested) { b.Dataset = "x" }, "dataset"},
		{"replayed for another dataset", func(b *DatasetAttested) { b.Dataset = hexDigest("other") }, "the statement is about dataset"},
		{"result differs", func(b *DatasetAttested) { b.Predicate.Result.Samples = 13 }, "result differs"},
		{"tool differs", func(b *DatasetAttested) { b.Predicate.Tool.Digest = hexDigest("t2") }, "kind, tool or report differ"},
		{"no statement", func(b *DatasetAttested) { b.Statement = nil }, "statement (the signed attestation envelope) is required"},
		{"statement not an envelope", func(b *DatasetAttested) { b.Statement = []byte("{}") }, "attestation envelope"},
		{"bad kind", func(b *DatasetAttested) { b.Predicate.Kind = "PII Scan" }, "kind"},
		{"counts do not sum", func(b *DatasetAttested) { b.Predicate.Result.Counts = map[string]uint64{"email": 1} }, "counts sum to 1"},
		{"pass with findings", func(b *DatasetAttested) {
			b.Predicate.Result.Findings = 1
			b.Predicate.Result.Counts = map[string]uint64{"email": 1}
		}, "cannot pass"},
		{"two signatures", func(b *DatasetAttested) {
			e, _ := dsse.Decode(b.Statement)
			e2 := dsse.Sign(c.admin.key, e.PayloadType, e.Payload)
			e.Signatures = append(e.Signatures, e2.Signatures...)
			b.Statement = e.Encode()
		}, "want exactly 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := attestedBy(t, c.auditor.key, d, testPredicate())
			b.Predicate.Result.Counts = map[string]uint64{"email": 0, "phone": 0}
			tc.mod(&b)
			err := validateBody(b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestVerifyStatement(t *testing.T) {
	c := newCast()
	b := attestedBy(t, c.auditor.key, hexDigest("d"), testPredicate())
	pub := c.auditor.key.Public().(ed25519.PublicKey)
	if _, err := VerifyStatement(b.Statement, pub); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyStatement(b.Statement, c.admin.key.Public().(ed25519.PublicKey)); err == nil || !strings.Contains(err.Error(), "signed by key") {
		t.Fatalf("other key: %v", err)
	}
	// Same key ID, another signature: forged.
	e, _ := dsse.Decode(b.Statement)
	forged := dsse.Sign(c.admin.key, e.PayloadType, e.Payload)
	forged.Signatures[0].KeyID = c.auditor.id
	if _, err := VerifyStatement(forged.Encode(), pub); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("forged: %v", err)
	}
}

func TestAttestationRequirement(t *testing.T) {
	c := newCast()
	have := []DatasetAttestation{{Kind: KindPIIScan, Auditor: c.auditor.id, Result: AttestationResult{Pass: true}},
		{Kind: "licence-check", Auditor: c.auditor.id, Result: AttestationResult{Pass: false}}}
	for _, tc := range []struct {
		req  AttestationRequirement
		want bool
	}{
		{AttestationRequirement{KindPIIScan, "auditor"}, true},
		{AttestationRequirement{KindPIIScan, c.auditor.id}, true},
		{AttestationRequirement{KindPIIScan, c.admin.id}, false},
		{AttestationRequirement{"licence-check", "auditor"}, false},
		{AttestationRequirement{"toxicity", "auditor"}, false},
	} {
		if got := len(MissingAttestations([]AttestationRequirement{tc.req}, have)) == 0; got != tc.want {
			t.Errorf("%s satisfied = %v, want %v", tc.req, got, tc.want)
		}
	}
	for _, tc := range []struct {
		reqs []AttestationRequirement
		want string
	}{
		{[]AttestationRequirement{{KindPIIScan, "trainer"}}, `by "trainer" must be the role "auditor"`},
		{[]AttestationRequirement{{"", "auditor"}}, "kind"},
		{[]AttestationRequirement{{KindPIIScan, "auditor"}, {KindPIIScan, "auditor"}}, "listed twice"},
	} {
		r := RoundRecipe{Strategy: "fedavg", Compression: "none", MinTrainers: 1, Aggregators: []string{c.agg.id}, RequireAttestations: tc.reqs}
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%v) = %v, want %q", tc.reqs, err, tc.want)
		}
	}
}

// FuzzDecodeStatement feeds arbitrary attestation files to DecodeStatement:
// no panic, and what it accepts validates, names one dataset and, signed
// again, decodes to the same statement.
func FuzzDecodeStatement(f *testing.F) {
	c := newCast()
	good := attestedBy(f, c.auditor.key, hexDigest("d"), testPredicate())
	f.Add(good.Statement)
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"k","sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, _, err := DecodeStatement(data)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil || !validID(s.Dataset()) {
			t.Fatalf("accepted statement does not validate: %v", err)
		}
		env, err := SignStatement(c.auditor.key, *s)
		if err != nil {
			t.Fatalf("re-sign: %v", err)
		}
		s2, err := VerifyStatement(env, c.auditor.key.Public().(ed25519.PublicKey))
		if err != nil || s2.Dataset() != s.Dataset() || s2.Predicate.Report != s.Predicate.Report || s2.Predicate.Kind != s.Predicate.Kind {
			t.Fatalf("re-signed statement reads differently: %+v vs %+v (%v)", s2, s, err)
		}
	})
}
