package ledger

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"github.com/fedtune/fedtune/internal/dsse"
)

// TypeDatasetAttested is the type name of DatasetAttested.
const TypeDatasetAttested = "DatasetAttested"

// Attestation statement format: a DSSE envelope whose payload is an in-toto
// Statement v1 naming one dataset (by its manifest digest) as its subject,
// with a fedtune attestation predicate.
const (
	StatementPayloadType     = "application/vnd.in-toto+json"
	StatementType            = "https://in-toto.io/Statement/v1"
	AttestationPredicateType = "https://fedtune.dev/attestation/v1"
	// KindPIIScan is the kind of attestation `fedtune dataset scan` signs.
	KindPIIScan = "pii-scan"
	// MaxStatementBytes bounds DatasetAttested.Statement.
	MaxStatementBytes = 16 << 10
	// MaxRequiredAttestations bounds RoundRecipe.RequireAttestations.
	MaxRequiredAttestations = 16
)

var kindRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,63}$`)

// AttestationResult is what a check found: whether the dataset passed,
// how many samples were checked, how many findings there were and, if the
// check counts them by kind, the counts (summing to Findings).
type AttestationResult struct {
	Pass     bool              `json:"pass"`
	Samples  uint64            `json:"samples"`
	Findings uint64            `json:"findings"`
	Counts   map[string]uint64 `json:"counts,omitempty"`
}

// AttestationTool names the program that made a check and the SHA-256 of
// its executable.
type AttestationTool struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
}

// AttestationPredicate is the predicate of an attestation statement: what
// kind of check, its result, the tool, and the digest of the full report.
type AttestationPredicate struct {
	Kind   string            `json:"kind"`
	Result AttestationResult `json:"result"`
	Tool   AttestationTool   `json:"tool"`
	Report string            `json:"report"`
}

// StatementSubject is an in-toto subject: a name and its digests.
type StatementSubject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Statement is an in-toto Statement v1 about one dataset.
type Statement struct {
	Type          string               `json:"_type"`
	Subject       []StatementSubject   `json:"subject"`
	PredicateType string               `json:"predicateType"`
	Predicate     AttestationPredicate `json:"predicate"`
}

// DatasetAttested (auditor) records a signed claim about a registered
// dataset: the check's kind, its result, the tool and the digest of the
// full report. Statement is the DSSE envelope of the in-toto statement the
// auditor signed with the same key as the tx, saying exactly these things
// about exactly this dataset: it is the portable attestation, checkable
// offline by anyone with the auditor's public key.
//
// Only auditors attest: an attestation is evidence for others about data
// they cannot see, so it must come from a party that neither owns the data
// (a trainer vouching for itself proves nothing) nor gains from a job's
// outcome (coordinators and aggregators choose and combine updates).
type DatasetAttested struct {
	Dataset   string               `json:"dataset"`
	Predicate AttestationPredicate `json:"predicate"`
	Statement []byte               `json:"statement"`
}

// TxType implements TxBody.
func (DatasetAttested) TxType() string { return TypeDatasetAttested }

// Validate checks the predicate's fields without state.
func (p *AttestationPredicate) Validate() error {
	if !kindRE.MatchString(p.Kind) {
		return fmt.Errorf("kind %q must be 1 to 64 of a-z, 0-9, '.', '-', starting with a letter or digit", abbrev(p.Kind))
	}
	if err := firstErr(checkText("tool.name", p.Tool.Name, MaxTextLen, true), checkDigest("tool.digest", p.Tool.Digest), checkDigest("report", p.Report)); err != nil {
		return err
	}
	r := p.Result
	if len(r.Counts) > MaxMapEntries {
		return fmt.Errorf("result.counts: %d entries, limit %d", len(r.Counts), MaxMapEntries)
	}
	var sum uint64
	for _, k := range sortedKeys(r.Counts) {
		if err := checkText("result.counts key", k, maxMapKeyLength, true); err != nil {
			return err
		}
		if sum+r.Counts[k] < sum {
			return fmt.Errorf("result.counts overflow")
		}
		sum += r.Counts[k]
	}
	if len(r.Counts) > 0 && sum != r.Findings {
		return fmt.Errorf("result.counts sum to %d, result.findings is %d", sum, r.Findings)
	}
	if r.Findings > 0 && r.Pass && p.Kind == KindPIIScan {
		return fmt.Errorf("a %s with %d findings cannot pass", KindPIIScan, r.Findings)
	}
	return nil
}

// NewStatement returns the statement of predicate p about the dataset with
// manifest digest dataset, named name.
func NewStatement(dataset, name string, p AttestationPredicate) Statement {
	return Statement{Type: StatementType, Subject: []StatementSubject{{Name: name, Digest: map[string]string{"sha256": dataset}}},
		PredicateType: AttestationPredicateType, Predicate: p}
}

// SignStatement signs s as a DSSE envelope and returns its bytes.
func SignStatement(key ed25519.PrivateKey, s Statement) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	payload, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	return dsse.Sign(key, StatementPayloadType, payload).Encode(), nil
}

// Validate checks a statement without state: its types, one subject with
// exactly one sha256 digest, and the predicate.
func (s *Statement) Validate() error {
	if s.Type != StatementType {
		return fmt.Errorf("statement _type %q, want %q", abbrev(s.Type), StatementType)
	}
	if s.PredicateType != AttestationPredicateType {
		return fmt.Errorf("statement predicateType %q, want %q", abbrev(s.PredicateType), AttestationPredicateType)
	}
	if len(s.Subject) != 1 {
		return fmt.Errorf("statement has %d subjects, want exactly 1 dataset", len(s.Subject))
	}
	sub := s.Subject[0]
	if err := checkText("subject name", sub.Name, MaxTextLen, false); err != nil {
		return err
	}
	if len(sub.Digest) != 1 {
		return fmt.Errorf("statement subject has %d digests, want exactly one sha256", len(sub.Digest))
	}
	if err := checkDigest("subject digest sha256", sub.Digest["sha256"]); err != nil {
		return err
	}
	return s.Predicate.Validate()
}

// Dataset returns the manifest digest the statement is about.
func (s *Statement) Dataset() string { return s.Subject[0].Digest["sha256"] }

// DecodeStatement decodes an attestation envelope strictly (canonical DSSE,
// one signature, the statement payload type, strict JSON) and checks it
// without state; it does not verify the signature (see VerifyStatement).
// It returns the statement and the signature's key ID.
func DecodeStatement(envelope []byte) (*Statement, string, error) {
	e, err := dsse.Decode(envelope)
	if err != nil {
		return nil, "", fmt.Errorf("attestation envelope: %w", err)
	}
	if e.PayloadType != StatementPayloadType {
		return nil, "", fmt.Errorf("attestation payloadType %q, want %q", abbrev(e.PayloadType), StatementPayloadType)
	}
	if len(e.Signatures) != 1 {
		return nil, "", fmt.Errorf("attestation has %d signatures, want exactly 1", len(e.Signatures))
	}
	var s Statement
	if err := decodeStrictJSON(e.Payload, &s); err != nil {
		return nil, "", fmt.Errorf("attestation statement: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, "", fmt.Errorf("attestation statement: %w", err)
	}
	return &s, e.Signatures[0].KeyID, nil
}

// VerifyStatement decodes an attestation envelope and verifies its one
// signature with pub.
func VerifyStatement(envelope []byte, pub ed25519.PublicKey) (*Statement, error) {
	s, keyID, err := DecodeStatement(envelope)
	if err != nil {
		return nil, err
	}
	if keyID != KeyID(pub) {
		shown := keyID
		if !validID(keyID) {
			shown = abbrev(keyID)
		}
		return nil, fmt.Errorf("attestation is signed by key %s, not %s", shown, KeyID(pub))
	}
	e, _ := dsse.Decode(envelope)
	if err := e.Verify(pub); err != nil {
		return nil, fmt.Errorf("attestation signature: %w", err)
	}
	return s, nil
}

// Matches says how the tx differs from the statement it carries ("" when
// the statement says exactly what the tx says, about the same dataset).
func (b DatasetAttested) Matches(s *Statement) string {
	switch {
	case s.Dataset() != b.Dataset:
		return fmt.Sprintf("the statement is about dataset %s, the tx names %s", s.Dataset(), b.Dataset)
	case s.Predicate.Kind != b.Predicate.Kind || s.Predicate.Report != b.Predicate.Report || s.Predicate.Tool != b.Predicate.Tool:
		return "the statement's kind, tool or report differ from the tx's"
	case s.Predicate.Result.Pass != b.Predicate.Result.Pass || s.Predicate.Result.Samples != b.Predicate.Result.Samples ||
		s.Predicate.Result.Findings != b.Predicate.Result.Findings || !maps.Equal(s.Predicate.Result.Counts, b.Predicate.Result.Counts):
		return "the statement's result differs from the tx's"
	}
	return ""
}

func validateDatasetAttested(b DatasetAttested) error {
	if err := checkDigest("dataset", b.Dataset); err != nil {
		return err
	}
	if err := b.Predicate.Validate(); err != nil {
		return fmt.Errorf("predicate: %w", err)
	}
	if len(b.Statement) == 0 {
		return fmt.Errorf("statement (the signed attestation envelope) is required")
	}
	if len(b.Statement) > MaxStatementBytes {
		return fmt.Errorf("statement is %d bytes, limit %d", len(b.Statement), MaxStatementBytes)
	}
	s, _, err := DecodeStatement(b.Statement)
	if err != nil {
		return fmt.Errorf("statement: %w", err)
	}
	if why := b.Matches(s); why != "" {
		return fmt.Errorf("statement: %s", why)
	}
	return nil
}

// AttestationRequirement is one attestation a job requires of every
// dataset its updates are computed on: a passing attestation of Kind by By,
// which is a member ID (that auditor) or the role "auditor" (any auditor).
type AttestationRequirement struct {
	Kind string `json:"kind" yaml:"kind"`
	By   string `json:"by" yaml:"by"`
}

// Validate checks a requirement's fields.
func (a AttestationRequirement) Validate() error {
	if !kindRE.MatchString(a.Kind) {
		return fmt.Errorf("kind %q must be 1 to 64 of a-z, 0-9, '.', '-'", abbrev(a.Kind))
	}
	if a.By != string(RoleAuditor) && !validID(a.By) {
		return fmt.Errorf("by %q must be the role %q or an auditor's member ID (64 lowercase hex): only auditors attest", abbrev(a.By), RoleAuditor)
	}
	return nil
}

// String is "kind by who".
func (a AttestationRequirement) String() string { return a.Kind + " by " + a.By }

// SatisfiedBy reports whether attestation d meets the requirement: same
// kind, passed, and by the named auditor (or any auditor).
func (a AttestationRequirement) SatisfiedBy(d DatasetAttestation) bool {
	return d.Kind == a.Kind && d.Result.Pass && (a.By == string(RoleAuditor) || a.By == d.Auditor)
}

// MissingAttestations returns the requirements that no attestation in have
// satisfies, in order.
func MissingAttestations(reqs []AttestationRequirement, have []DatasetAttestation) []AttestationRequirement {
	var out []AttestationRequirement
	for _, r := range reqs {
		if !slices.ContainsFunc(have, r.SatisfiedBy) {
			out = append(out, r)
		}
	}
	return out
}

func validateRequirements(reqs []AttestationRequirement) error {
	if len(reqs) > MaxRequiredAttestations {
		return fmt.Errorf("recipe.require_attestations: %d entries, limit %d", len(reqs), MaxRequiredAttestations)
	}
	seen := map[AttestationRequirement]bool{}
	for i, r := range reqs {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("recipe.require_attestations[%d]: %w", i, err)
		}
		if seen[r] {
			return fmt.Errorf("recipe.require_attestations[%d]: %s is listed twice", i, r)
		}
		seen[r] = true
	}
	return nil
}

// DatasetAttestation is an attestation as the ledger's state records it:
// the latest DatasetAttested of one auditor about one dataset and kind.
type DatasetAttestation struct {
	Dataset string            `json:"dataset"`
	Kind    string            `json:"kind"`
	Auditor string            `json:"auditor"`
	Result  AttestationResult `json:"result"`
	Tool    AttestationTool   `json:"tool"`
	Report  string            `json:"report"`
	Height  uint64            `json:"height"`
	TxHash  string            `json:"tx_hash"`
}

func validID(s string) bool { return checkDigest("id", s) == nil }
