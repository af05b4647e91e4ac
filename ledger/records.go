package ledger

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/fedtune/fedtune/internal/dspub"
)

// Member is a member of the ledger as its state records it.
type Member struct {
	ID        string `json:"id"`
	PublicKey string `json:"public_key"` // 64 hex
	Role      Role   `json:"role"`
	Name      string `json:"name,omitempty"`
	Active    bool   `json:"active"`
	// AddedHeight is the height of the block that last added the member (0 =
	// genesis); RemovedHeight that of its removal while not Active.
	AddedHeight   uint64 `json:"added_height"`
	RemovedHeight uint64 `json:"removed_height,omitempty"`
	RemovedReason string `json:"removed_reason,omitempty"`
}

// Model is a model known to the ledger: registered as a base model, or the
// product of a committed round (then Parent, JobID and Round are set).
type Model struct {
	Digest  string `json:"digest"`
	Name    string `json:"name,omitempty"`
	Licence string `json:"licence,omitempty"`
	Source  string `json:"source,omitempty"`
	Config  string `json:"config,omitempty"`
	// Tokenizer is the tokenizer digest ModelRegistered recorded, if any.
	Tokenizer string `json:"tokenizer,omitempty"`
	// Sources are the imported files ModelRegistered recorded, if any.
	Sources []SourceFile `json:"sources,omitempty"`
	// Registrar is the coordinator that registered it, or the aggregator
	// that committed it.
	Registrar string `json:"registrar"`
	Height    uint64 `json:"height"`
	TxHash    string `json:"tx_hash"`
	Parent    string `json:"parent,omitempty"` // base model of the round that produced it
	JobID     string `json:"job_id,omitempty"`
	Round     uint64 `json:"round,omitempty"`
}

// Dataset is a registered dataset manifest.
type Dataset struct {
	Digest  string `json:"digest"`
	Name    string `json:"name"`
	Licence string `json:"licence"`
	Source  string `json:"source"`
	Samples uint64 `json:"samples"`
	Root    string `json:"root"`  // the manifest's Merkle root over the sorted sample hashes (hex)
	Bytes   uint64 `json:"bytes"` // total bytes of the hashed sample texts
	Owner   string `json:"owner"` // the trainer that registered it
	Height  uint64 `json:"height"`
	TxHash  string `json:"tx_hash"`

	// Attestations are the dataset's attestations (the latest of each
	// auditor and kind), ordered by kind then auditor. Filled by
	// FSM.Dataset; not stored in the dataset's record.
	Attestations []DatasetAttestation `json:"attestations,omitempty"`
	// Published is set for a dataset recorded by DatasetPublished: its
	// samples are in the artifact store for every member to read. Format,
	// Card, Leaves and Shards are the manifest's; Manifest is the signed
	// manifest (its envelope bytes), for a reader to check offline.
	Published bool          `json:"published,omitempty"`
	Format    string        `json:"format,omitempty"`
	Card      string        `json:"card,omitempty"`
	Leaves    string        `json:"leaves,omitempty"`
	Shards    []dspub.Shard `json:"shards,omitempty"`
	Manifest  string        `json:"manifest,omitempty"`
}

// PublishedPage is one page of the published datasets as the ledger lists
// them (Query QUERY_KIND_PUBLISHED_DATASETS): by name, bytewise.
type PublishedPage struct {
	Datasets []PublishedListing `json:"datasets"`
	// Next is the name to list after for the next page; "" on the last.
	Next string `json:"next,omitempty"`
}

// PublishedListing is a published dataset's record (attestations
// included) and the position of its DatasetPublished in the block at its
// Height, so that a reader can order the datasets as they were published.
type PublishedListing struct {
	Dataset
	TxIndex uint64 `json:"tx_index"`
}

// RoundStatus is where a round is in its life.
type RoundStatus string

// The round statuses: open until committed or failed, then final.
const (
	StatusOpen      RoundStatus = "open"
	StatusCommitted RoundStatus = "committed"
	StatusFailed    RoundStatus = "failed"
)

// Round is a round as the ledger records it.
type Round struct {
	JobID        string    `json:"job_id"`
	Round        uint64    `json:"round"`
	ConfigDigest string    `json:"config_digest"`
	BaseModel    string    `json:"base_model"`
	Strategy     string    `json:"strategy"`
	Trainers     []string  `json:"trainers"`
	Deadline     time.Time `json:"deadline"`
	// Ranges are the published samples each trainer was given.
	Ranges       []TrainerRange `json:"ranges,omitempty"`
	Status       RoundStatus    `json:"status"`
	Coordinator  string         `json:"coordinator"`
	OpenedHeight uint64         `json:"opened_height"`
	// SubmissionsClosedHeight is the height of the block holding the
	// round's SubmissionsClosed (0: open for submissions); that block's
	// hash is the round's spot-check draw seed.
	SubmissionsClosedHeight uint64 `json:"submissions_closed_height,omitempty"`
	// Set when the round closes.
	ClosedHeight uint64 `json:"closed_height,omitempty"`
	Aggregator   string `json:"aggregator,omitempty"`
	// Set when committed.
	ModelDigest       string            `json:"model_digest,omitempty"`
	CommittedStrategy string            `json:"committed_strategy,omitempty"`
	Params            map[string]string `json:"params,omitempty"`
	Contributors      []Contribution    `json:"contributors,omitempty"`
	// Set when failed.
	FailReason string `json:"fail_reason,omitempty"`
	// Evaluation is set by the round's RoundEvaluated, after the commit.
	Evaluation *Evaluation `json:"evaluation,omitempty"`

	// Updates lists the round's submitted updates, ordered by trainer ID.
	// Filled by FSM.Round; not stored in the round's record.
	Updates []Update `json:"updates,omitempty"`
	// DrawSeed is the hash (hex) of the block at SubmissionsClosedHeight,
	// the seed of the round's spot-check draw (Update.Drawn). Filled by
	// FSM.Round once that block is on the chain; not stored.
	DrawSeed string `json:"draw_seed,omitempty"`
	// VerdictsUntil is the last block time (unix nanoseconds) at which a
	// verdict on a drawn update of this round is admitted once the round
	// is closed (VerifyRule.VerdictsUntil); while it is open, verdicts
	// are admitted at any time. Filled by FSM.Round with DrawSeed; not
	// stored.
	VerdictsUntil int64 `json:"verdicts_until,omitempty"`
}

// Evaluation is a committed round's held-out evaluation as its
// RoundEvaluated recorded it.
type Evaluation struct {
	EvalDigest  string              `json:"eval_digest"`
	MeanNLL     float64             `json:"mean_nll"`
	Tokens      uint64              `json:"tokens"`
	Scores      []ContributionScore `json:"scores,omitempty"`
	Coordinator string              `json:"coordinator"`
	Height      uint64              `json:"height"`
	TxHash      string              `json:"tx_hash"`
}

// Update is one submitted update of a round.
type Update struct {
	Trainer       string             `json:"trainer"`
	UpdateDigest  string             `json:"update_digest"`
	DatasetDigest string             `json:"dataset_digest"`
	Samples       uint64             `json:"samples"`
	Metrics       map[string]float64 `json:"metrics,omitempty"`
	// Commitment is the submission's training commitment, if it made one.
	// A round's read (FSM.Round, the Round query) returns it without
	// StepDigests, so that the reply does not grow with disclosed steps:
	// they are on the UpdateSubmitted tx at TxHash, read per update
	// (ledger client StepDigests, UpdateStepDigests).
	Commitment   *TrainingCommitment `json:"commitment,omitempty"`
	Ranges       []SampleRange       `json:"ranges,omitempty"`
	Height       uint64              `json:"height"`
	TxHash       string              `json:"tx_hash"`
	Rejected     bool                `json:"rejected,omitempty"`
	RejectReason string              `json:"reject_reason,omitempty"`
	RejectedBy   string              `json:"rejected_by,omitempty"`
	// RejectStep is the step a verifier's rejection named (0: none).
	RejectStep uint64 `json:"reject_step,omitempty"`
	// VerifiedBy is the verifier whose UpdateVerified passed the update
	// ("" for none), at VerifiedHeight.
	VerifiedBy     string `json:"verified_by,omitempty"`
	VerifiedHeight uint64 `json:"verified_height,omitempty"`
	// Verdicts are the verifiers' verdicts on a drawn update, one per
	// verifier, in chain order. VerifiedBy or Rejected is set once the
	// job's quorum agrees (VerifyRule.Need).
	Verdicts []Verdict `json:"verdicts,omitempty"`
	// Drawn reports that the update was drawn for a spot check
	// (RoundRecipe.DrawnUpdate under Round.DrawSeed). Filled by FSM.Round;
	// not stored.
	Drawn bool `json:"drawn,omitempty"`
}

// Verdict is one verifier's verdict on a drawn update: Passed, or a
// rejection naming Step, at Height.
type Verdict struct {
	Verifier string `json:"verifier"`
	Passed   bool   `json:"passed,omitempty"`
	Step     uint64 `json:"step,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Height   uint64 `json:"height"`
}

// Agreeing counts the verdicts that agree with pass (and, for a
// rejection, name step).
func (u *Update) Agreeing(pass bool, step uint64) int {
	n := 0
	for _, v := range u.Verdicts {
		if v.Passed == pass && (pass || v.Step == step) {
			n++
		}
	}
	return n
}

// VerdictOf returns verifier's verdict on the update, if it gave one.
func (u *Update) VerdictOf(verifier string) (Verdict, bool) {
	for _, v := range u.Verdicts {
		if v.Verifier == verifier {
			return v, true
		}
	}
	return Verdict{}, false
}

// TxRecord is a transaction as the chain holds it, with the proof that it is
// in its block: VerifyInclusion(Hash, Index, TreeSize, Proof, TxRoot) holds,
// and TxRoot is the TxRoot of the header whose hash is BlockHash.
type TxRecord struct {
	Hash      [32]byte
	Height    uint64
	Index     uint64
	Envelope  []byte
	Proof     [][]byte // RFC 6962 audit path
	TreeSize  uint64   // the block's NumTxs
	TxRoot    [32]byte
	BlockHash [32]byte
}

// UpdateSubmission is one UpdateSubmitted of an update digest: which
// trainer submitted it for which job and round, and at what height.
type UpdateSubmission struct {
	JobID   string `json:"job_id"`
	Round   uint64 `json:"round"`
	Trainer string `json:"trainer"`
	Height  uint64 `json:"height"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("ledger: encode %T: %v", v, err))
	}
	return b
}
