package coordinator

import (
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// TestJobRequireAttestations: the YAML field is decoded strictly, checked,
// carried into the ledger recipe, and left out of the canonical encoding
// when empty (older job files keep their digests).
func TestJobRequireAttestations(t *testing.T) {
	base := "name: j\nmodel:\n  digest: " + strings.Repeat("a", 64) + "\nrounds: 1\ntrainers:\n  min: 1\n"
	plain, err := ParseJob("j.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain.Canonical()), "require_attestations") {
		t.Fatalf("canonical encoding of a job without requirements names them: %s", plain.Canonical())
	}
	j, err := ParseJob("j.yaml", []byte(base+"require_attestations:\n  - {kind: pii-scan, by: auditor}\n  - {kind: pii-scan, by: "+strings.Repeat("b", 64)+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := j.Recipe([]string{strings.Repeat("c", 64)}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.RequireAttestations) != 2 || r.RequireAttestations[0] != (ledger.AttestationRequirement{Kind: "pii-scan", By: "auditor"}) {
		t.Fatalf("recipe requirements %+v", r.RequireAttestations)
	}
	if back, err := DecodeCanonical(j.Canonical()); err != nil || back.Digest() != j.Digest() || len(back.RequireAttestations) != 2 {
		t.Fatalf("canonical round trip: %v", err)
	}
	if j.Digest() == plain.Digest() {
		t.Fatal("requirements do not change the job's digest")
	}
	for _, tc := range []struct{ yaml, want string }{
		{"require_attestations:\n  - {kind: pii-scan, by: trainer}\n", `require_attestations[0]: by "trainer" must be the role "auditor"`},
		{"require_attestations:\n  - {kind: PII, by: auditor}\n", `require_attestations[0]: kind "PII"`},
		{"require_attestations:\n  - {kind: pii-scan, by: auditor}\n  - {kind: pii-scan, by: auditor}\n", "require_attestations[1]: pii-scan by auditor is listed twice"},
		{"require_attestations:\n  - {kind: pii-scan, who: auditor}\n", "who"},
	} {
		if _, err := ParseJob("j.yaml", []byte(base+tc.yaml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
