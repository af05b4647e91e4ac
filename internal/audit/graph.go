package audit

import (
	"fmt"
	"slices"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Graph is a model's lineage in the shape the renderers draw: the model,
// its base, and every round between them, oldest first.
type Graph struct {
	Model  GraphModel   `json:"model"`
	Base   GraphModel   `json:"base"`
	Rounds []GraphRound `json:"rounds"`
	// Attestations are the attestations of the datasets behind the model,
	// by dataset digest (only datasets that have some).
	Attestations map[string][]ledger.DatasetAttestation `json:"attestations,omitempty"`
	// Missing lists each attestation a round's job requires that a
	// dataset behind the round lacks.
	Missing []ledger.MissingAttestation `json:"missing_attestations,omitempty"`
	// Anchored, when set, says that every fact above was checked against
	// the txs that recorded it, in blocks with enough node cosignatures
	// (see Anchor).
	Anchored *AnchorReport `json:"anchored,omitempty"`
}

// GraphModel is a model node.
type GraphModel struct {
	Digest    string `json:"digest"`
	Name      string `json:"name,omitempty"`
	Licence   string `json:"licence,omitempty"`
	Source    string `json:"source,omitempty"`
	Registrar string `json:"registrar,omitempty"`
	Height    uint64 `json:"height"`
}

// GraphRound is one committed round: its strategy and parameters, the
// contributors and the rejected updates.
type GraphRound struct {
	JobID           string             `json:"job_id"`
	Round           uint64             `json:"round"`
	ConfigDigest    string             `json:"config_digest"`
	BaseModel       string             `json:"base_model"`
	ModelDigest     string             `json:"model_digest"`
	Strategy        string             `json:"strategy"`
	Params          map[string]string  `json:"params,omitempty"`
	OpenedHeight    uint64             `json:"opened_height"`
	CommittedHeight uint64             `json:"committed_height"`
	Aggregator      string             `json:"aggregator"`
	Contributors    []GraphContributor `json:"contributors"`
	Rejected        []GraphRejected    `json:"rejected,omitempty"`
	// Eval is the round's held-out evaluation (RoundEvaluated), if recorded.
	Eval *ledger.Evaluation `json:"eval,omitempty"`
}

// GraphContributor is one update that went into a round's model.
type GraphContributor struct {
	Trainer      string       `json:"trainer"`
	Weight       float64      `json:"weight"`
	UpdateDigest string       `json:"update_digest"`
	Samples      uint64       `json:"samples"`
	Dataset      GraphDataset `json:"dataset"`
	// Published are the published datasets the update also trained on by
	// its ranges, besides Dataset (a trainer mixing its own data with
	// published ranges).
	Published []GraphDataset `json:"published,omitempty"`
}

// GraphDataset is the dataset an update was computed on. Root is the
// Merkle root the ledger recorded (or, for a record without one, the
// manifest's when the manifest was supplied).
type GraphDataset struct {
	Digest  string `json:"digest"`
	Name    string `json:"name,omitempty"`
	Licence string `json:"licence,omitempty"`
	Source  string `json:"source,omitempty"`
	Samples uint64 `json:"samples,omitempty"`
	Root    string `json:"root,omitempty"`
}

// GraphRejected is an update the aggregator rejected, with its reason.
type GraphRejected struct {
	Trainer      string `json:"trainer"`
	UpdateDigest string `json:"update_digest"`
	Reason       string `json:"reason"`
}

// NewGraph builds the graph of a lineage. roots maps dataset manifest
// digests to their Merkle roots, where known (may be nil); a root the
// ledger recorded wins.
func NewGraph(l *ledger.Lineage, roots map[string]string) *Graph {
	g := &Graph{Model: graphModel(l.Model), Base: graphModel(l.Base)}
	ds := map[string]ledger.Dataset{}
	for _, d := range l.Datasets {
		ds[d.Digest] = d
		if len(d.Attestations) > 0 {
			if g.Attestations == nil {
				g.Attestations = map[string][]ledger.DatasetAttestation{}
			}
			g.Attestations[d.Digest] = d.Attestations
		}
	}
	g.Missing = l.Missing
	for _, r := range slices.Backward(l.Rounds) {
		gr := GraphRound{JobID: r.JobID, Round: r.Round, ConfigDigest: r.ConfigDigest, BaseModel: r.BaseModel, ModelDigest: r.ModelDigest,
			Strategy: r.Strategy, Params: r.Params, OpenedHeight: r.OpenedHeight, CommittedHeight: r.CommittedHeight, Aggregator: r.Aggregator, Eval: r.Eval}
		gd := func(digest string) GraphDataset {
			d := ds[digest]
			root := d.Root
			if root == "" {
				root = roots[digest]
			}
			return GraphDataset{Digest: digest, Name: d.Name, Licence: d.Licence, Source: d.Source, Samples: d.Samples, Root: root}
		}
		for _, c := range r.Contributors {
			gc := GraphContributor{Trainer: c.Trainer, Weight: c.Weight, UpdateDigest: c.UpdateDigest, Samples: c.Samples, Dataset: gd(c.DatasetDigest)}
			for _, p := range c.Published {
				gc.Published = append(gc.Published, gd(p))
			}
			gr.Contributors = append(gr.Contributors, gc)
		}
		slices.SortFunc(gr.Contributors, func(a, b GraphContributor) int { return cmpStr(a.Trainer, b.Trainer) })
		for _, x := range r.Rejected {
			gr.Rejected = append(gr.Rejected, GraphRejected(x))
		}
		slices.SortFunc(gr.Rejected, func(a, b GraphRejected) int { return cmpStr(a.Trainer, b.Trainer) })
		g.Rounds = append(g.Rounds, gr)
	}
	return g
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func graphModel(m ledger.Model) GraphModel {
	return GraphModel{Digest: m.Digest, Name: m.Name, Licence: m.Licence, Source: m.Source, Registrar: m.Registrar, Height: m.Height}
}

// DecodeLineage decodes lineage JSON as a ledger node's lineage query
// returns it (client.DecodeLineage), as read from a file.
func DecodeLineage(data []byte) (*ledger.Lineage, error) {
	l, err := client.DecodeLineage(data)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return l, nil
}

// short abbreviates a digest or ID for labels.
func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
