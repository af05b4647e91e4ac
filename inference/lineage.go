package inference

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/safetext"
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
	writeJSON(w, http.StatusOK, l.showable())
}

// MaxLineageText is the longest name of a Lineage as GET
// /v1/fedtune/lineage answers it, in bytes; longer ones are cut with "…".
const MaxLineageText = 256

// showable returns a copy of l safe to answer and draw: every string made
// showable (showText) and every loss or weight that JSON cannot carry
// (NaN, ±Inf) left out. The ledger refuses such names, licences and
// losses in its transactions, but the lineage is read from one ledger node
// and a job's coordinator, each of which may lie, and one NaN would make
// the whole answer fail to encode.
func (l Lineage) showable() Lineage {
	t := showText
	out := l
	// EvalSource is the node's own sentence (EvalSource*), longer than a
	// name.
	out.Model, out.Adapter, out.Job, out.Base, out.EvalSource = t(l.Model), t(l.Adapter), t(l.Job), t(l.Base), showTextN(l.EvalSource, 4*MaxLineageText)
	if l.Block != nil {
		b := *l.Block
		b.Hash = t(b.Hash)
		out.Block = &b
	}
	out.Rounds = make([]LineageRound, len(l.Rounds))
	for i, r := range l.Rounds {
		r.Model, r.EvalSource = t(r.Model), t(r.EvalSource)
		if r.EvalLoss = finite(r.EvalLoss); r.EvalLoss == nil {
			r.EvalSource = ""
		}
		cs := make([]LineageContributor, len(r.Contributors))
		for j, c := range r.Contributors {
			c.Member, c.Dataset, c.LossRemoved = t(c.Member), t(c.Dataset), finite(c.LossRemoved)
			if math.IsNaN(c.Weight) || math.IsInf(c.Weight, 0) {
				c.Weight = 0
			}
			cs[j] = c
		}
		r.Contributors = cs
		out.Rounds[i] = r
	}
	out.Datasets = make([]LineageDataset, len(l.Datasets))
	for i, d := range l.Datasets {
		out.Datasets[i] = LineageDataset{Digest: t(d.Digest), Name: t(d.Name), Licence: t(d.Licence)}
	}
	return out
}

func finite(v *float64) *float64 {
	if v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) {
		return nil
	}
	return v
}

// showText returns s with what internal/safetext refuses written out
// visibly ("\u202E" for a bidi override, "\x07" for a control character,
// "\xFF" for a byte that is not UTF-8), so that it cannot reorder or
// hide the text around it on the page, and cut to MaxLineageText bytes.
func showText(s string) string { return showTextN(s, MaxLineageText) }

// showTextN is showText cutting at max bytes.
func showTextN(s string, max int) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || safetext.Kind(r) != "" {
			clean = false
			break
		}
	}
	if clean && len(s) <= max {
		return s
	}
	var b strings.Builder
	for i, w := 0, 0; i < len(s); i += w {
		r, n := utf8.DecodeRuneInString(s[i:])
		w = n
		var piece string
		switch {
		case r == utf8.RuneError && n <= 1:
			piece = fmt.Sprintf("\\x%02X", s[i])
		case r < 0x80 && safetext.Kind(r) != "":
			piece = fmt.Sprintf("\\x%02X", r)
		case safetext.Kind(r) != "":
			piece = fmt.Sprintf("\\u%04X", r)
		default:
			piece = s[i : i+n]
		}
		if b.Len()+len(piece) > max-len("…") {
			b.WriteString("…")
			break
		}
		b.WriteString(piece)
	}
	return b.String()
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
