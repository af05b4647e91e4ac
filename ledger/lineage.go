package ledger

import "slices"

// Lineage is the history of a model back to its registered base model:
// every round on the way (newest first), with its contributors, their
// weights and datasets, and the updates the aggregator rejected.
type Lineage struct {
	// Model is the model asked about.
	Model Model
	// Base is the registered base model the chain of rounds starts from.
	Base Model
	// Rounds[0] produced Model; Rounds[len-1] started from Base. Empty when
	// Model is itself a registered base model.
	Rounds []LineageRound
	// Datasets lists every dataset a contributor cited, by digest, each
	// with its attestations.
	Datasets []Dataset
	// Missing lists, round by round (newest first), each attestation a
	// round's job requires that a contributor's dataset lacks (now: an
	// auditor's later failing attestation replaces its passing one).
	Missing []MissingAttestation `json:",omitempty"`
}

// MissingAttestation is an attestation a job requires that a dataset
// behind one of its rounds lacks.
type MissingAttestation struct {
	JobID       string
	Round       uint64
	Dataset     string
	Requirement AttestationRequirement
}

// LineageRound is one committed round in a lineage.
type LineageRound struct {
	JobID           string
	Round           uint64
	ConfigDigest    string
	BaseModel       string // the model the round started from
	ModelDigest     string // the model it committed
	Strategy        string // as committed
	Params          map[string]string
	OpenedHeight    uint64
	CommittedHeight uint64
	Aggregator      string
	Contributors    []LineageContribution
	Rejected        []RejectedUpdate
	// Eval is the round's held-out evaluation (its RoundEvaluated), or nil
	// when none is recorded (yet). It is read from the round's record,
	// not stored with the lineage link.
	Eval *Evaluation `json:",omitempty"`
}

// LineageContribution is one update that went into a committed model.
type LineageContribution struct {
	Trainer       string
	UpdateDigest  string
	DatasetDigest string
	Samples       uint64
	Weight        float64
	// Published lists, sorted and each once, the published datasets the
	// update also trained on by its ranges (UpdateSubmitted.Ranges) other
	// than DatasetDigest: a trainer mixing its own data with published
	// ranges names both. Empty for updates without ranges, and in records
	// written before the field existed.
	Published []string `json:",omitempty"`
}

// Datasets lists every dataset behind the contribution: DatasetDigest,
// then Published.
func (c LineageContribution) Datasets() []string {
	return append([]string{c.DatasetDigest}, c.Published...)
}

// RangeDatasets returns the datasets of ranges other than own, sorted and
// each once (nil when there are none): LineageContribution.Published.
func RangeDatasets(own string, ranges []SampleRange) []string {
	var out []string
	for _, r := range ranges {
		if r.Dataset != own && !slices.Contains(out, r.Dataset) {
			out = append(out, r.Dataset)
		}
	}
	slices.Sort(out)
	return out
}

// RejectedUpdate is an update the aggregator rejected in a round.
type RejectedUpdate struct {
	Trainer      string
	UpdateDigest string
	Reason       string
}
