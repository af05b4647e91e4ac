package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/safetext"
	"github.com/fedtune/fedtune/internal/strictjson"
)

// TxBody is the typed content of a transaction. The body types of this
// package (MemberAdded … RoundFailed) implement it with value receivers;
// DecodeTx returns bodies as values, so callers switch on them directly.
type TxBody interface {
	// TxType is the type name carried in the payload, e.g. "RoundOpened".
	TxType() string
}

// The transaction type names.
const (
	TypeMemberAdded       = "MemberAdded"
	TypeMemberRemoved     = "MemberRemoved"
	TypeModelRegistered   = "ModelRegistered"
	TypeDatasetRegistered = "DatasetRegistered"
	TypeRoundOpened       = "RoundOpened"
	TypeUpdateSubmitted   = "UpdateSubmitted"
	TypeUpdateRejected    = "UpdateRejected"
	TypeRoundCommitted    = "RoundCommitted"
	TypeRoundFailed       = "RoundFailed"
	TypeJobRegistered     = "JobRegistered"
	TypeRoundEvaluated    = "RoundEvaluated"
)

// TxRoles maps each transaction type to the role allowed to sign it (for
// the types in TxSigners, the first of their roles; check with MaySign).
var TxRoles = map[string]Role{
	TypeMemberAdded:       RoleAdmin,
	TypeMemberRemoved:     RoleAdmin,
	TypeModelRegistered:   RoleCoordinator,
	TypeRoundOpened:       RoleCoordinator,
	TypeJobRegistered:     RoleCoordinator,
	TypeDatasetRegistered: RoleTrainer,
	TypeDatasetAttested:   RoleAuditor,
	TypeUpdateSubmitted:   RoleTrainer,
	TypeUpdateRejected:    RoleAggregator,
	TypeRoundCommitted:    RoleAggregator,
	TypeRoundFailed:       RoleAggregator,
	TypeRoundEvaluated:    RoleCoordinator,
}

// Field limits checked by ValidateBasic.
const (
	MaxTextLen      = 1024 // names, licences, sources, strategies, parameter values
	MaxReasonLen    = 4096 // rejection and failure reasons
	MaxJobIDLen     = 128
	MaxTrainers     = 10000 // selected trainers (and contributors) per round
	MaxMapEntries   = 64    // metrics and strategy parameters
	maxMapKeyLength = 128
)

// MemberAdded (admin) adds a member, or re-adds a removed one, with a role.
type MemberAdded struct {
	// PublicKey is the member's ed25519 public key as 64 hex characters.
	PublicKey string `json:"public_key"`
	Role      Role   `json:"role"`
	Name      string `json:"name,omitempty"`
}

// MemberRemoved (admin) removes a member; its later transactions are rejected.
type MemberRemoved struct {
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// ModelRegistered (coordinator) registers a base model by its weight digest.
type ModelRegistered struct {
	Digest  string `json:"digest"`
	Name    string `json:"name"`
	Licence string `json:"licence"`
	Source  string `json:"source"`
	// Config is the digest of the model's config.json, if known.
	Config string `json:"config,omitempty"`
	// Tokenizer is the model's tokenizer digest (model.TokenizerDigest:
	// its tokenizer and chat-template files), if known. An inference node
	// serving the model refuses other files, and "fedtune audit receipt"
	// a receipt naming another.
	Tokenizer string `json:"tokenizer,omitempty"`
	// Sources lists the files the model was imported from (a Hugging Face
	// folder as published), sorted by path, each path once; empty for a
	// model fedtune wrote itself. Digest stays the canonical weight digest.
	Sources []SourceFile `json:"sources,omitempty"`
}

// SourceFile is one file of the folder a model was imported from: its path
// relative to that folder (slash-separated), its size in bytes and the
// lowercase hex SHA-256 of its bytes.
type SourceFile struct {
	Path   string `json:"path"`
	Size   uint64 `json:"size"`
	SHA256 string `json:"sha256"`
}

// MaxSourceFiles bounds ModelRegistered.Sources.
const MaxSourceFiles = 1024

// DatasetRegistered (trainer) registers a dataset by its manifest digest.
// Only the registering trainer may cite it in an update. Root and Bytes
// are copied from the signed manifest (its RFC 6962 Merkle root over the
// sorted sample hashes, in lowercase hex, and the total bytes of the
// hashed sample texts), so that a sample's inclusion or exclusion proof
// can be checked against the ledger alone.
type DatasetRegistered struct {
	Digest  string `json:"digest"`
	Name    string `json:"name"`
	Licence string `json:"licence"`
	Source  string `json:"source"`
	Samples uint64 `json:"samples"`
	Root    string `json:"root"`
	Bytes   uint64 `json:"bytes"`
}

// RoundOpened (coordinator) opens round Round of job JobID on BaseModel, a
// registered or previously committed model. The job must be registered
// (JobRegistered) by the signing coordinator; its rounds are numbered 1, 2,
// 3, … (each the previous plus one), and the trainer count must be within
// the recipe's bounds.
type RoundOpened struct {
	JobID        string    `json:"job_id"`
	Round        uint64    `json:"round"`
	ConfigDigest string    `json:"config_digest"`
	BaseModel    string    `json:"base_model"`
	Strategy     string    `json:"strategy"`
	Trainers     []string  `json:"trainers"`
	Deadline     time.Time `json:"deadline"`
	// Ranges are the samples of the job's published datasets each
	// trainer trains on this round: exactly RoundRecipe.Ranges(Round,
	// Trainers), none for a job on private data only.
	Ranges []TrainerRange `json:"ranges,omitempty"`
}

// UpdateSubmitted (a selected trainer) records one update to an open round,
// computed on a dataset the same trainer registered. One per trainer per round.
type UpdateSubmitted struct {
	JobID         string             `json:"job_id"`
	Round         uint64             `json:"round"`
	UpdateDigest  string             `json:"update_digest"`
	DatasetDigest string             `json:"dataset_digest"`
	Samples       uint64             `json:"samples"`
	Metrics       map[string]float64 `json:"metrics,omitempty"`
	// Commitment, when present, commits the trainer to how it produced the
	// update, so that an auditor can replay the training bit for bit and
	// bisect to the first step that differs.
	Commitment *TrainingCommitment `json:"commitment,omitempty"`
	// Ranges are the published samples the update was trained on:
	// exactly the trainer's ranges of RoundOpened.Ranges. DatasetDigest is
	// then the trainer's own registered dataset, or, for a trainer with
	// no data of its own, one of the job's published datasets.
	Ranges []SampleRange `json:"ranges,omitempty"`
}

// TrainingCommitment is what a trainer commits to about its local
// training (see model/commitment, which computes both digests): the
// digest of the task's inputs (base model, starting adapter,
// hyperparameters, seed, the ordered sample IDs of each batch) and an RFC
// 6962 Merkle root over the digests of the trainable state after each of
// its Steps optimizer steps, leaf i being step i+1.
type TrainingCommitment struct {
	InputsDigest string `json:"inputs_digest"`
	Steps        uint64 `json:"steps"`
	StepRoot     string `json:"step_root"`
	// StepDigests, when the trainer discloses them (it does in a
	// spot-checked job, for up to MaxDisclosedSteps steps), are the leaves
	// of StepRoot: the digest of the trainable state after each step,
	// step 1's first. A verifier compares its replay's with them and
	// names the first step that differs without the trainer's
	// checkpoints. ValidateBasic checks that they hash to StepRoot.
	StepDigests []string `json:"step_digests,omitempty"`
}

// MaxCommittedSteps bounds TrainingCommitment.Steps.
const MaxCommittedSteps = 1 << 24

// MaxDisclosedSteps bounds TrainingCommitment.StepDigests.
const MaxDisclosedSteps = 4096

// StepDigestsRoot returns the RFC 6962 Merkle root (hex) over step
// digests (each 64 lowercase hex), step 1's first: a training
// commitment's StepRoot (model/commitment computes the same).
func StepDigestsRoot(ds []string) (string, error) {
	leaves := make([][32]byte, len(ds))
	for i, d := range ds {
		if !digest.Valid(d) {
			return "", fmt.Errorf("step_digests[%d] %q is not a SHA-256 digest (64 lowercase hex characters)", i, abbrev(d))
		}
		b, _ := hex.DecodeString(d)
		copy(leaves[i][:], b)
	}
	root := buildTree(leaves).root
	return hex.EncodeToString(root[:]), nil
}

// UpdateRejected (aggregator) marks a submitted update of an open round as
// rejected; it can no longer be a contributor.
type UpdateRejected struct {
	JobID        string `json:"job_id"`
	Round        uint64 `json:"round"`
	UpdateDigest string `json:"update_digest"`
	Reason       string `json:"reason"`
	// Step, set only in a verifier's rejection of a drawn update (see
	// SubmissionsClosed), names the first step of the update's training
	// whose state differs from the verifier's replay (when nothing pins
	// it, the first step the verifier cannot prove equal); 0 otherwise.
	Step uint64 `json:"step,omitempty"`
}

// Contribution is one update that went into a committed model, with its
// aggregation weight.
type Contribution struct {
	Trainer      string  `json:"trainer"`
	UpdateDigest string  `json:"update_digest"`
	Weight       float64 `json:"weight"`
}

// RoundCommitted (aggregator) closes an open round with the new model it
// produced from the listed, submitted and not rejected, updates.
type RoundCommitted struct {
	JobID        string            `json:"job_id"`
	Round        uint64            `json:"round"`
	ModelDigest  string            `json:"model_digest"`
	Strategy     string            `json:"strategy"`
	Params       map[string]string `json:"params,omitempty"`
	Contributors []Contribution    `json:"contributors"`
}

// RoundFailed (aggregator) closes an open round without a model.
type RoundFailed struct {
	JobID  string `json:"job_id"`
	Round  uint64 `json:"round"`
	Reason string `json:"reason"`
}

// ContributionScore is one contributor's score in a RoundEvaluated: the
// loss its update alone removes on the job's eval set, that is the mean
// NLL of the round's starting model minus the mean NLL of the starting
// model with that update alone applied (negative when the update alone
// makes the model worse).
type ContributionScore struct {
	Trainer     string  `json:"trainer"`
	LossRemoved float64 `json:"loss_removed"`
}

// RoundEvaluated (the job's coordinator) records the held-out evaluation
// of a committed round: the mean NLL per token of the round's model on the
// eval set whose digest is EvalDigest, over Tokens tokens, and the score of
// each contributor (see ContributionScore). One per committed round;
// ModelDigest must be the model the round committed, every scored trainer
// a contributor of the round, each listed once.
type RoundEvaluated struct {
	JobID       string              `json:"job_id"`
	Round       uint64              `json:"round"`
	ModelDigest string              `json:"model_digest"`
	EvalDigest  string              `json:"eval_digest"`
	MeanNLL     float64             `json:"mean_nll"`
	Tokens      uint64              `json:"tokens"`
	Scores      []ContributionScore `json:"scores"`
}

// TxType implements TxBody.
func (RoundEvaluated) TxType() string { return TypeRoundEvaluated }

// TxType implements TxBody.
func (MemberAdded) TxType() string { return TypeMemberAdded }

// TxType implements TxBody.
func (MemberRemoved) TxType() string { return TypeMemberRemoved }

// TxType implements TxBody.
func (ModelRegistered) TxType() string { return TypeModelRegistered }

// TxType implements TxBody.
func (DatasetRegistered) TxType() string { return TypeDatasetRegistered }

// TxType implements TxBody.
func (RoundOpened) TxType() string { return TypeRoundOpened }

// TxType implements TxBody.
func (UpdateSubmitted) TxType() string { return TypeUpdateSubmitted }

// TxType implements TxBody.
func (UpdateRejected) TxType() string { return TypeUpdateRejected }

// TxType implements TxBody.
func (RoundCommitted) TxType() string { return TypeRoundCommitted }

// TxType implements TxBody.
func (RoundFailed) TxType() string { return TypeRoundFailed }

var bodyDecoders = map[string]func([]byte) (TxBody, error){
	TypeMemberAdded:       decodeBody[MemberAdded],
	TypeMemberRemoved:     decodeBody[MemberRemoved],
	TypeModelRegistered:   decodeBody[ModelRegistered],
	TypeDatasetRegistered: decodeBody[DatasetRegistered],
	TypeRoundOpened:       decodeBody[RoundOpened],
	TypeUpdateSubmitted:   decodeBody[UpdateSubmitted],
	TypeUpdateRejected:    decodeBody[UpdateRejected],
	TypeRoundCommitted:    decodeBody[RoundCommitted],
	TypeRoundFailed:       decodeBody[RoundFailed],
	TypeJobRegistered:     decodeBody[JobRegistered],
	TypeDatasetAttested:   decodeBody[DatasetAttested],
	TypeRoundEvaluated:    decodeBody[RoundEvaluated],
}

func decodeBody[T TxBody](raw []byte) (TxBody, error) {
	var v T
	if err := decodeStrictJSON(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// decodeStrictJSON decodes signed JSON so that it has one reading: field
// names match exactly (case-sensitive), a name given twice in any object,
// a field the type does not declare, invalid UTF-8 and trailing data are
// errors (see internal/strictjson). Every tx body type decodes through it.
func decodeStrictJSON(raw []byte, v any) error {
	return strictjson.Unmarshal(raw, v)
}

// DecodeTxBody decodes the JSON body of a transaction of type typ as
// DecodeTx does, strictly, and checks its fields without state. Tools that
// take a body to sign (the CLI, an aggregator) use it so that they sign only
// what the ledger will read the same way.
func DecodeTxBody(typ string, raw []byte) (TxBody, error) {
	dec, ok := bodyDecoders[typ]
	if !ok {
		return nil, fmt.Errorf("unknown tx type %q", abbrev(typ))
	}
	body, err := dec(raw)
	if err != nil {
		return nil, fmt.Errorf("%s body: %w", typ, err)
	}
	if err := validateBody(body); err != nil {
		return nil, fmt.Errorf("%s: %w", typ, err)
	}
	return body, nil
}

// payloadJSON is the signed payload.
type payloadJSON struct {
	ChainID string          `json:"chain_id"`
	Signer  string          `json:"signer"`
	Nonce   uint64          `json:"nonce"`
	Type    string          `json:"type"`
	Body    json.RawMessage `json:"body"`
}

// Tx is a decoded transaction: its envelope and the payload's fields. The
// signature is not checked by DecodeTx (the key comes from the member table).
type Tx struct {
	Hash     [32]byte
	Raw      []byte // the envelope bytes as received
	Envelope *Envelope
	ChainID  string
	Signer   string
	Nonce    uint64
	Body     TxBody

	// verifiedKey is the hex key Admit verified the signature with on this
	// node; applying the tx skips verifying again if the signer still
	// holds that key.
	verifiedKey string
}

// VerifyWith checks the envelope's single signature against pub, as a
// *TxError (CodeBadSignature, or CodeMalformed for an envelope that does
// not carry exactly one well-formed signature).
func (tx *Tx) VerifyWith(pub ed25519.PublicKey) error { return verifyEnvelope(tx.Envelope, pub) }

// MarkVerified records that this node verified the tx's signature with the
// signer's key keyHex (as its member record holds it), so that applying
// the tx need not verify it again while the signer holds that key.
func (tx *Tx) MarkVerified(keyHex string) { tx.verifiedKey = keyHex }

// VerifiedKey returns the key MarkVerified recorded ("" for none).
func (tx *Tx) VerifiedKey() string { return tx.verifiedKey }

// TxHash is the transaction's ID: the SHA-256 of its envelope bytes.
func TxHash(envelope []byte) [32]byte { return sha256.Sum256(envelope) }

// DecodeTx decodes an envelope and its payload and checks everything that
// needs no state: canonical envelope, payload type, exactly one signature
// whose key ID is the payload's signer, a known tx type, a well-formed body.
// Errors are *TxError.
func DecodeTx(envelope []byte) (*Tx, error) {
	e, err := DecodeEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	if e.PayloadType != PayloadType {
		return nil, txErr(CodeMalformed, "payloadType %q, want %q", abbrev(e.PayloadType), PayloadType)
	}
	if len(e.Signatures) != 1 {
		return nil, txErr(CodeMalformed, "envelope has %d signatures, want exactly 1", len(e.Signatures))
	}
	var p payloadJSON
	if err := decodeStrictJSON(e.Payload, &p); err != nil {
		return nil, txErr(CodeMalformed, "payload: %v", err)
	}
	if !digest.Valid(p.Signer) {
		return nil, txErr(CodeMalformed, "payload signer %q is not a member ID (64 lowercase hex)", abbrev(p.Signer))
	}
	if e.Signatures[0].KeyID != p.Signer {
		return nil, txErr(CodeBadSignature, "signature keyid %q differs from payload signer %s", abbrev(e.Signatures[0].KeyID), p.Signer)
	}
	if p.ChainID == "" {
		return nil, txErr(CodeMalformed, "payload has no chain_id")
	}
	if p.Nonce == 0 {
		return nil, txErr(CodeBadNonce, "nonce must be at least 1")
	}
	dec, ok := bodyDecoders[p.Type]
	if !ok {
		return nil, txErr(CodeMalformed, "unknown tx type %q", abbrev(p.Type))
	}
	if len(p.Body) == 0 || bytes.Equal(p.Body, []byte("null")) {
		return nil, txErr(CodeMalformed, "%s: payload has no body", p.Type)
	}
	body, err := dec(p.Body)
	if err != nil {
		return nil, txErr(CodeMalformed, "%s body: %v", p.Type, err)
	}
	if err := validateBody(body); err != nil {
		return nil, txErr(CodeInvalid, "%s: %v", p.Type, err)
	}
	return &Tx{Hash: TxHash(envelope), Raw: envelope, Envelope: e, ChainID: p.ChainID, Signer: p.Signer, Nonce: p.Nonce, Body: body}, nil
}

// ValidateBasic checks an envelope without state (see DecodeTx). The
// signature, the signer's membership and role, the nonce and the body's
// references are checked against state by FSM.CheckTx and when applied.
func ValidateBasic(envelope []byte) error {
	_, err := DecodeTx(envelope)
	return err
}

// SignTx builds and signs a transaction: it checks body, wraps it in a payload
// for chainID with the signer's next nonce, signs it with key and returns the
// encoded envelope, ready to submit.
func SignTx(key ed25519.PrivateKey, chainID string, nonce uint64, body TxBody) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sign tx: %w: private key is %d bytes", ErrBadKey, len(key))
	}
	if body == nil {
		return nil, fmt.Errorf("sign tx: nil body")
	}
	if _, ok := bodyDecoders[body.TxType()]; !ok {
		return nil, fmt.Errorf("sign tx: unknown tx type %q", body.TxType())
	}
	if chainID == "" {
		return nil, fmt.Errorf("sign tx: empty chain ID")
	}
	if nonce == 0 {
		return nil, fmt.Errorf("sign tx: nonce must be at least 1")
	}
	if err := validateBody(body); err != nil {
		return nil, fmt.Errorf("sign tx %s: %w", body.TxType(), err)
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("sign tx %s: %w", body.TxType(), err)
	}
	pub := key.Public().(ed25519.PublicKey)
	payload, err := json.Marshal(payloadJSON{ChainID: chainID, Signer: KeyID(pub), Nonce: nonce, Type: body.TxType(), Body: raw})
	if err != nil {
		return nil, fmt.Errorf("sign tx %s: %w", body.TxType(), err)
	}
	return SignEnvelope(key, PayloadType, payload).Encode(), nil
}

// validateBody checks a body's fields without state.
func validateBody(b TxBody) error {
	switch b := b.(type) {
	case MemberAdded:
		if _, err := ParsePublicKey(b.PublicKey); err != nil || strings.HasPrefix(strings.TrimSpace(b.PublicKey), "-") || len(b.PublicKey) != 64 {
			return fmt.Errorf("public_key must be the ed25519 public key as 64 hex characters")
		}
		if strings.ToLower(b.PublicKey) != b.PublicKey {
			return fmt.Errorf("public_key must be lowercase hex")
		}
		if !b.Role.Valid() {
			return fmt.Errorf("role %q is not one of %v", abbrev(string(b.Role)), Roles)
		}
		return checkText("name", b.Name, MaxTextLen, false)
	case MemberRemoved:
		if !digest.Valid(b.ID) {
			return fmt.Errorf("id %q is not a member ID (64 lowercase hex)", abbrev(b.ID))
		}
		return checkText("reason", b.Reason, MaxReasonLen, false)
	case ModelRegistered:
		if err := checkDigest("digest", b.Digest); err != nil {
			return err
		}
		if b.Config != "" {
			if err := checkDigest("config", b.Config); err != nil {
				return err
			}
		}
		if b.Tokenizer != "" {
			if err := checkDigest("tokenizer", b.Tokenizer); err != nil {
				return err
			}
		}
		if err := checkSources(b.Sources); err != nil {
			return err
		}
		return firstErr(checkText("name", b.Name, MaxTextLen, true), checkText("licence", b.Licence, MaxTextLen, true), checkText("source", b.Source, MaxTextLen, true))
	case DatasetRegistered:
		if err := firstErr(checkDigest("digest", b.Digest), checkDigest("root", b.Root)); err != nil {
			return err
		}
		if b.Samples == 0 {
			return fmt.Errorf("samples must be at least 1")
		}
		return firstErr(checkText("name", b.Name, MaxTextLen, true), checkText("licence", b.Licence, MaxTextLen, true), checkText("source", b.Source, MaxTextLen, true))
	case RoundOpened:
		if err := checkJobID(b.JobID); err != nil {
			return err
		}
		if err := firstErr(checkDigest("config_digest", b.ConfigDigest), checkDigest("base_model", b.BaseModel), checkText("strategy", b.Strategy, MaxTextLen, true)); err != nil {
			return err
		}
		if len(b.Trainers) == 0 || len(b.Trainers) > MaxTrainers {
			return fmt.Errorf("trainers: %d selected, want 1 to %d", len(b.Trainers), MaxTrainers)
		}
		seen := make(map[string]bool, len(b.Trainers))
		for i, t := range b.Trainers {
			if !digest.Valid(t) {
				return fmt.Errorf("trainers[%d] %q is not a member ID", i, abbrev(t))
			}
			if seen[t] {
				return fmt.Errorf("trainers[%d] %s is listed twice", i, t)
			}
			seen[t] = true
		}
		if b.Deadline.IsZero() {
			return fmt.Errorf("deadline is required")
		}
		if len(b.Ranges) > MaxTrainers*MaxPublished {
			return fmt.Errorf("ranges: %d, limit %d", len(b.Ranges), MaxTrainers*MaxPublished)
		}
		for i, r := range b.Ranges {
			if !seen[r.Trainer] {
				return fmt.Errorf("ranges[%d].trainer %q is not one of the round's trainers", i, abbrev(r.Trainer))
			}
			if err := checkRanges(fmt.Sprintf("ranges[%d]", i), []SampleRange{r.Range()}, 1); err != nil {
				return err
			}
		}
		return nil
	case UpdateSubmitted:
		if err := firstErr(checkJobID(b.JobID), checkDigest("update_digest", b.UpdateDigest), checkDigest("dataset_digest", b.DatasetDigest)); err != nil {
			return err
		}
		if b.Samples == 0 {
			return fmt.Errorf("samples must be at least 1")
		}
		if err := checkRanges("ranges", b.Ranges, MaxPublished); err != nil {
			return err
		}
		if len(b.Metrics) > MaxMapEntries {
			return fmt.Errorf("metrics: %d entries, limit %d", len(b.Metrics), MaxMapEntries)
		}
		for _, k := range sortedKeys(b.Metrics) {
			if err := checkText("metrics key", k, maxMapKeyLength, true); err != nil {
				return err
			}
			if v := b.Metrics[k]; math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("metrics[%q] is not finite", k)
			}
		}
		if c := b.Commitment; c != nil {
			if err := firstErr(checkDigest("commitment.inputs_digest", c.InputsDigest), checkDigest("commitment.step_root", c.StepRoot)); err != nil {
				return err
			}
			if c.Steps == 0 || c.Steps > MaxCommittedSteps {
				return fmt.Errorf("commitment.steps: %d, want 1 to %d", c.Steps, MaxCommittedSteps)
			}
			if len(c.StepDigests) > 0 {
				if len(c.StepDigests) > MaxDisclosedSteps || uint64(len(c.StepDigests)) != c.Steps {
					return fmt.Errorf("commitment.step_digests: %d disclosed for %d steps; disclose all of them, at most %d", len(c.StepDigests), c.Steps, MaxDisclosedSteps)
				}
				root, err := StepDigestsRoot(c.StepDigests)
				if err != nil {
					return fmt.Errorf("commitment.%w", err)
				}
				if root != c.StepRoot {
					return fmt.Errorf("commitment.step_digests hash to %s, not the committed step_root %s", root, c.StepRoot)
				}
			}
		}
		return nil
	case UpdateRejected:
		if b.Step > MaxCommittedSteps {
			return fmt.Errorf("step %d: limit %d", b.Step, MaxCommittedSteps)
		}
		return firstErr(checkJobID(b.JobID), checkDigest("update_digest", b.UpdateDigest), checkText("reason", b.Reason, MaxReasonLen, true))
	case RoundCommitted:
		if err := firstErr(checkJobID(b.JobID), checkDigest("model_digest", b.ModelDigest), checkText("strategy", b.Strategy, MaxTextLen, true)); err != nil {
			return err
		}
		if len(b.Params) > MaxMapEntries {
			return fmt.Errorf("params: %d entries, limit %d", len(b.Params), MaxMapEntries)
		}
		for _, k := range sortedKeys(b.Params) {
			if err := firstErr(checkText("params key", k, maxMapKeyLength, true), checkText("params["+k+"]", b.Params[k], MaxTextLen, false)); err != nil {
				return err
			}
		}
		if len(b.Contributors) == 0 || len(b.Contributors) > MaxTrainers {
			return fmt.Errorf("contributors: %d listed, want 1 to %d", len(b.Contributors), MaxTrainers)
		}
		for i, c := range b.Contributors {
			if !digest.Valid(c.Trainer) {
				return fmt.Errorf("contributors[%d].trainer %q is not a member ID", i, abbrev(c.Trainer))
			}
			if err := checkDigest(fmt.Sprintf("contributors[%d].update_digest", i), c.UpdateDigest); err != nil {
				return err
			}
			if math.IsNaN(c.Weight) || math.IsInf(c.Weight, 0) || c.Weight < 0 {
				return fmt.Errorf("contributors[%d].weight %v must be finite and not negative", i, c.Weight)
			}
		}
		return nil
	case RoundFailed:
		return firstErr(checkJobID(b.JobID), checkText("reason", b.Reason, MaxReasonLen, true))
	case DatasetAttested:
		return validateDatasetAttested(b)
	case RoundEvaluated:
		return validateEvaluated(b)
	case JobRegistered:
		if err := checkJobID(b.JobID); err != nil {
			return err
		}
		return b.Recipe.Validate()
	}
	if ok, err := validateNodeBody(b); ok {
		return err
	}
	if ok, err := validatePublishedBody(b); ok {
		return err
	}
	if ok, err := validateCancelBody(b); ok {
		return err
	}
	if ok, err := validateSpotCheckBody(b); ok {
		return err
	}
	return fmt.Errorf("unknown tx body %T", b)
}

// validateEvaluated checks a RoundEvaluated without state: a job, a round
// of at least 1, digests, a finite loss over at least one token, and at
// most MaxTrainers scores, each a member ID listed once with a finite value.
func validateEvaluated(b RoundEvaluated) error {
	if err := firstErr(checkJobID(b.JobID), checkDigest("model_digest", b.ModelDigest), checkDigest("eval_digest", b.EvalDigest)); err != nil {
		return err
	}
	if b.Round == 0 {
		return fmt.Errorf("round must be at least 1")
	}
	if math.IsNaN(b.MeanNLL) || math.IsInf(b.MeanNLL, 0) {
		return fmt.Errorf("mean_nll %v is not finite", b.MeanNLL)
	}
	if b.MeanNLL < 0 {
		return fmt.Errorf("mean_nll %v is negative; a mean negative log-likelihood is at least 0", b.MeanNLL)
	}
	if b.Tokens == 0 {
		return fmt.Errorf("tokens must be at least 1")
	}
	if len(b.Scores) > MaxTrainers {
		return fmt.Errorf("scores: %d listed, limit %d", len(b.Scores), MaxTrainers)
	}
	seen := make(map[string]bool, len(b.Scores))
	for i, s := range b.Scores {
		if !digest.Valid(s.Trainer) {
			return fmt.Errorf("scores[%d].trainer %q is not a member ID", i, abbrev(s.Trainer))
		}
		if seen[s.Trainer] {
			return fmt.Errorf("scores[%d]: trainer %s is listed twice", i, s.Trainer)
		}
		seen[s.Trainer] = true
		if math.IsNaN(s.LossRemoved) || math.IsInf(s.LossRemoved, 0) {
			return fmt.Errorf("scores[%d].loss_removed %v of trainer %s is not finite", i, s.LossRemoved, s.Trainer)
		}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func checkDigest(field, s string) error {
	if !digest.Valid(s) {
		return fmt.Errorf("%s %q is not a SHA-256 digest (64 lowercase hex characters)", field, abbrev(s))
	}
	return nil
}

// checkSources requires at most MaxSourceFiles entries, sorted by path and
// each path once, every path a clean relative slash path inside its folder
// and every sha256 a digest.
func checkSources(src []SourceFile) error {
	if len(src) > MaxSourceFiles {
		return fmt.Errorf("sources: %d files, limit %d", len(src), MaxSourceFiles)
	}
	for i, f := range src {
		field := fmt.Sprintf("sources[%d].path", i)
		if err := checkText(field, f.Path, MaxTextLen, true); err != nil {
			return err
		}
		if !ValidSourcePath(f.Path) {
			return fmt.Errorf("%s %q must be a clean relative path inside the model folder (slash-separated, no \"..\", no leading \"/\", no backslash)", field, abbrev(f.Path))
		}
		if i > 0 && src[i-1].Path >= f.Path {
			return fmt.Errorf("%s %q: sources must be sorted by path, each path once", field, abbrev(f.Path))
		}
		if err := checkDigest(fmt.Sprintf("sources[%d].sha256", i), f.SHA256); err != nil {
			return err
		}
	}
	return nil
}

// ValidSourcePath reports whether p is a clean relative slash path that
// stays inside its folder: not empty, not absolute, no "." or ".."
// element, no empty element, no backslash or colon.
func ValidSourcePath(p string) bool {
	if p == "" || strings.ContainsAny(p, "\\:") || strings.HasPrefix(p, "/") {
		return false
	}
	for _, e := range strings.Split(p, "/") {
		if e == "" || e == "." || e == ".." {
			return false
		}
	}
	return true
}

func checkJobID(s string) error {
	if s == "" {
		return fmt.Errorf("job_id is required")
	}
	return checkText("job_id", s, MaxJobIDLen, true)
}

// checkText requires at most max bytes of valid UTF-8 without control, bidi
// or zero-width characters (internal/safetext), and non-empty when
// required. Errors name the field and the character's position.
func checkText(field, s string, max int, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s is required", field)
		}
		return nil
	}
	if len(s) > max {
		return fmt.Errorf("%s is %d bytes, limit %d", field, len(s), max)
	}
	if err := safetext.Check(s); err != nil {
		return fmt.Errorf("%s %q: %w", field, abbrev(s), err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
