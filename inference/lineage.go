package inference

import (
	"net/http"

	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/ledger"
)

// LineagePath is the endpoint that answers the served model's Lineage as
// JSON.
const LineagePath = "/v1/fedtune/lineage"

// Lineage is the served model's history on the ledger, as GET
// /v1/fedtune/lineage answers it and the page at / draws it. A node that
// serves standalone knows only the model: Standalone is true and Rounds
// and Datasets are empty.
type Lineage struct {
	Model      string           `json:"model"`             // the served model's weight digest
	Adapter    string           `json:"adapter,omitempty"` // the adapter merged in; "" for none
	Standalone bool             `json:"standalone"`        // no ledger lineage
	Job        string           `json:"job,omitempty"`     // the training job's ID
	Base       string           `json:"base,omitempty"`    // the job's base model digest
	Block      *receipt.Block   `json:"block,omitempty"`   // the block that committed the served weights
	Rounds     []LineageRound   `json:"rounds"`            // committed rounds, oldest first
	Datasets   []LineageDataset `json:"datasets"`          // every dataset the rounds trained on
	// EvalSource says where the rounds' eval losses come from, for the
	// reader to weigh them ("" when none is shown).
	EvalSource string `json:"eval_source,omitempty"`
}

// LineageRound is one committed round of the served model's job.
type LineageRound struct {
	Round    int      `json:"round"`
	Model    string   `json:"model"`               // the round's global model (or adapter) digest
	Height   uint64   `json:"height"`              // the block that committed it
	EvalLoss *float64 `json:"eval_loss,omitempty"` // the round's evaluation loss; nil when not reported
	// EvalSource is where EvalLoss comes from: EvalFromLedger (the round's
	// RoundEvaluated) or EvalFromCoordinator (the job's coordinator, for a
	// round the ledger holds no RoundEvaluated of); "" without a loss.
	EvalSource   string               `json:"eval_source,omitempty"`
	Contributors []LineageContributor `json:"contributors"`
}

// The sources of a round's eval loss (LineageRound.EvalSource).
const (
	EvalFromLedger      = "ledger"
	EvalFromCoordinator = "coordinator"
)

// LineageContributor is one member whose update a round aggregated.
type LineageContributor struct {
	Member  string  `json:"member"`            // ledger member ID
	Dataset string  `json:"dataset,omitempty"` // digest of the dataset it trained on
	Weight  float64 `json:"weight,omitempty"`  // its weight in the aggregate
	// LossRemoved is the contributor's score in the round's RoundEvaluated
	// (the eval loss its update alone removes); nil when not recorded.
	LossRemoved *float64 `json:"loss_removed,omitempty"`
}

// LineageDataset is a dataset a contributor trained on.
type LineageDataset struct {
	Digest  string `json:"digest"`
	Name    string `json:"name,omitempty"`
	Licence string `json:"licence,omitempty"` // SPDX identifier or the licence's name
}

// lineage answers the served model's lineage.
func (s *Server) lineage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, &APIError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "use GET " + r.URL.Path})
		return
	}
	m := s.Model()
	l := Lineage{Model: m.Digest, Adapter: m.Adapter, Standalone: true, Block: m.Block}
	ml := m.Lineage
	if m.LineageFunc != nil {
		if fl := m.LineageFunc(); fl != nil {
			ml = fl
		}
	}
	if ml != nil {
		l = *ml
		if l.Block == nil {
			l.Block = m.Block
		}
	}
	if l.Rounds == nil {
		l.Rounds = []LineageRound{}
	}
	if l.Datasets == nil {
		l.Datasets = []LineageDataset{}
	}
	writeJSON(w, http.StatusOK, l)
}

// LedgerLineage turns the ledger's lineage query answer into the served
// model's Lineage, rounds oldest first. A round's eval loss and its
// contributors' scores are its RoundEvaluated's, as the ledger's lineage
// carries them; evalLoss (nil for none) is the fallback for a round of the
// model's job with no RoundEvaluated: a loss the job's coordinator
// reported, by round number, marked EvalFromCoordinator. EvalSource says
// which sources the rounds' losses come from. Its Block is left nil: the
// page then shows the served Model's Block.
func LedgerLineage(l *ledger.Lineage, evalLoss map[uint64]float64) *Lineage {
	out := &Lineage{Model: l.Model.Digest, Job: l.Model.JobID, Base: l.Base.Digest,
		Rounds:   make([]LineageRound, 0, len(l.Rounds)),
		Datasets: make([]LineageDataset, 0, len(l.Datasets))}
	var fromLedger, fromCoord bool
	for i := len(l.Rounds) - 1; i >= 0; i-- {
		r := l.Rounds[i]
		lr := LineageRound{Round: int(r.Round), Model: r.ModelDigest, Height: r.CommittedHeight,
			Contributors: make([]LineageContributor, 0, len(r.Contributors))}
		if out.Job == "" {
			out.Job = r.JobID
		}
		scores := map[string]float64{}
		if ev := r.Eval; ev != nil {
			v := ev.MeanNLL
			lr.EvalLoss, lr.EvalSource, fromLedger = &v, EvalFromLedger, true
			for _, s := range ev.Scores {
				scores[s.Trainer] = s.LossRemoved
			}
		} else if v, ok := evalLoss[r.Round]; ok && r.JobID == out.Job {
			lr.EvalLoss, lr.EvalSource, fromCoord = &v, EvalFromCoordinator, true
		}
		for _, c := range r.Contributors {
			lc := LineageContributor{Member: c.Trainer, Dataset: c.DatasetDigest, Weight: c.Weight}
			if v, ok := scores[c.Trainer]; ok {
				lc.LossRemoved = &v
			}
			lr.Contributors = append(lr.Contributors, lc)
		}
		out.Rounds = append(out.Rounds, lr)
	}
	for _, d := range l.Datasets {
		out.Datasets = append(out.Datasets, LineageDataset{Digest: d.Digest, Name: d.Name, Licence: d.Licence})
	}
	switch {
	case fromLedger && fromCoord:
		out.EvalSource = EvalSourceLedger + "; rounds marked \"coordinator\" have no RoundEvaluated yet: " + EvalSourceCoordinator
	case fromLedger:
		out.EvalSource = EvalSourceLedger
	case fromCoord:
		out.EvalSource = EvalSourceCoordinator
	}
	return out
}

// What Lineage.EvalSource says of losses from each source.
const (
	EvalSourceLedger      = "mean NLL per token on the job's held-out eval data, recorded on the ledger (each round's RoundEvaluated, signed by the job's coordinator)"
	EvalSourceCoordinator = "mean NLL per token on the job's held-out eval data, as the job's coordinator reports it (not recorded on the ledger)"
)
