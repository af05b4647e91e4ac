package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

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
	// Datasets lists every dataset a contributor cited, by digest.
	Datasets []Dataset
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
}

// LineageContribution is one update that went into a committed model.
type LineageContribution struct {
	Trainer       string
	UpdateDigest  string
	DatasetDigest string
	Samples       uint64
	Weight        float64
}

// RejectedUpdate is an update the aggregator rejected in a round.
type RejectedUpdate struct {
	Trainer      string
	UpdateDigest string
	Reason       string
}

// lineageLink is the record stored per committed model (a/l/<digest>): a
// LineageRound in a compact binary form, so that walking a lineage costs one
// point read and a cheap decode per round.
type lineageLink LineageRound

const lineageVersion byte = 1

func (l *lineageLink) encode() []byte {
	var w writer
	w.u8(lineageVersion)
	w.str(l.JobID)
	w.u64(l.Round)
	w.str(l.ConfigDigest)
	w.str(l.BaseModel)
	w.str(l.ModelDigest)
	w.str(l.Strategy)
	keys := sortedKeys(l.Params)
	w.uvarint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.str(l.Params[k])
	}
	w.u64(l.OpenedHeight)
	w.u64(l.CommittedHeight)
	w.str(l.Aggregator)
	w.uvarint(uint64(len(l.Contributors)))
	for _, c := range l.Contributors {
		w.str(c.Trainer)
		w.str(c.UpdateDigest)
		w.str(c.DatasetDigest)
		w.u64(c.Samples)
		w.f64(c.Weight)
	}
	w.uvarint(uint64(len(l.Rejected)))
	for _, r := range l.Rejected {
		w.str(r.Trainer)
		w.str(r.UpdateDigest)
		w.str(r.Reason)
	}
	return w.b
}

func decodeLineageLink(b []byte) (*lineageLink, error) {
	r := reader{b: b}
	if v := r.u8(); r.err == nil && v != lineageVersion {
		return nil, fmt.Errorf("lineage record version %d, want %d", v, lineageVersion)
	}
	const maxStr = MaxReasonLen
	l := &lineageLink{}
	l.JobID = r.str(maxStr)
	l.Round = r.u64()
	l.ConfigDigest = r.str(maxStr)
	l.BaseModel = r.str(maxStr)
	l.ModelDigest = r.str(maxStr)
	l.Strategy = r.str(maxStr)
	if n := r.length(MaxMapEntries); n > 0 {
		l.Params = make(map[string]string, n)
		for i := 0; i < n && r.err == nil; i++ {
			k := r.str(maxStr)
			l.Params[k] = r.str(maxStr)
		}
	}
	l.OpenedHeight = r.u64()
	l.CommittedHeight = r.u64()
	l.Aggregator = r.str(maxStr)
	n := r.length(MaxTrainers)
	if n > 0 {
		l.Contributors = make([]LineageContribution, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		c := &l.Contributors[i]
		c.Trainer = r.str(maxStr)
		c.UpdateDigest = r.str(maxStr)
		c.DatasetDigest = r.str(maxStr)
		c.Samples = r.u64()
		c.Weight = r.f64()
	}
	n = r.length(MaxTrainers)
	if n > 0 {
		l.Rejected = make([]RejectedUpdate, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		x := &l.Rejected[i]
		x.Trainer = r.str(maxStr)
		x.UpdateDigest = r.str(maxStr)
		x.Reason = r.str(maxStr)
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return l, nil
}

// errStop ends an iteration early.
var errStop = errors.New("stop")

func encodeSegmentPtr(seg string, depth uint64) []byte {
	var w writer
	w.str(seg)
	w.u64(depth)
	return w.b
}

func decodeSegmentPtr(b []byte) (string, uint64, error) {
	r := reader{b: b}
	seg := r.str(64)
	depth := r.u64()
	return seg, depth, r.done()
}

// getter is what lineage reads through: a snapshot of the state.
type getter interface {
	Get(key []byte) ([]byte, bool, error)
}

// segmentReader is what lineage reads through: a snapshot of the state.
type segmentReader interface {
	getter
	Iter(prefix []byte, fn func(k, v []byte) error) error
}

// lineage walks from digest back to its base model.
func lineage(st segmentReader, digest string) (*Lineage, error) {
	var m Model
	if ok, err := getJSON(st, modelKey(digest), &m); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("model %s: %w", digest, ErrRecordNotFound)
	}
	out := &Lineage{Model: m}
	datasets := map[string]bool{}
	visited := map[string]bool{}
	d := digest
	for {
		ptr, ok, err := st.Get(lineageKey(d))
		if err != nil {
			return nil, err
		}
		if !ok {
			break // d is a registered base model
		}
		seg, depth, err := decodeSegmentPtr(ptr)
		if err != nil {
			return nil, fmt.Errorf("ledger: lineage pointer of %s: %w", d, err)
		}
		if visited[seg] {
			return nil, fmt.Errorf("ledger: lineage of %s loops at %s: state is corrupt", digest, d)
		}
		visited[seg] = true
		links := make([]*lineageLink, 0, min(depth+1, 1<<16))
		prefix := segmentPrefix(seg)
		err = st.Iter(prefix, func(k, v []byte) error {
			if uint64(len(links)) > depth {
				return errStop
			}
			if len(k) != len(prefix)+8 || binary.BigEndian.Uint64(k[len(prefix):]) != uint64(len(links)) {
				return fmt.Errorf("lineage segment %s: unexpected key %q", seg, k)
			}
			l, err := decodeLineageLink(v)
			if err != nil {
				return fmt.Errorf("lineage segment %s depth %d: %w", seg, len(links), err)
			}
			links = append(links, l)
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		if uint64(len(links)) != depth+1 || links[depth].ModelDigest != d {
			return nil, fmt.Errorf("ledger: lineage segment %s does not reach %s at depth %d: state is corrupt", seg, d, depth)
		}
		for i := int(depth); i >= 0; i-- {
			l := links[i]
			if i > 0 && l.BaseModel != links[i-1].ModelDigest {
				return nil, fmt.Errorf("ledger: lineage segment %s breaks at depth %d: state is corrupt", seg, i)
			}
			for _, c := range l.Contributors {
				datasets[c.DatasetDigest] = true
			}
			out.Rounds = append(out.Rounds, LineageRound(*l))
		}
		d = links[0].BaseModel
	}
	cur := m
	if d != digest {
		cur = Model{} // decode afresh: JSON leaves absent fields as they were
		if ok, err := getJSON(st, modelKey(d), &cur); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("ledger: base model %s is missing: state is corrupt", d)
		}
	}
	out.Base = cur
	keys := make([]string, 0, len(datasets))
	for k := range datasets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var d Dataset
		if ok, err := getJSON(st, datasetKey(k), &d); err != nil {
			return nil, err
		} else if ok {
			out.Datasets = append(out.Datasets, d)
		}
	}
	return out, nil
}
