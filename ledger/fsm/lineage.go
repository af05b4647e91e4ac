package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/internal/codec"
)

// lineageLink is the record stored per committed model (a/l/<digest>): a
// LineageRound in a compact binary form, so that walking a lineage costs one
// point read and a cheap decode per round.
type lineageLink ledger.LineageRound

const lineageVersion byte = 1

func (l *lineageLink) encode() []byte {
	var w codec.Writer
	w.U8(lineageVersion)
	w.Str(l.JobID)
	w.U64(l.Round)
	w.Str(l.ConfigDigest)
	w.Str(l.BaseModel)
	w.Str(l.ModelDigest)
	w.Str(l.Strategy)
	keys := slices.Sorted(maps.Keys(l.Params))
	w.Uvarint(uint64(len(keys)))
	for _, k := range keys {
		w.Str(k)
		w.Str(l.Params[k])
	}
	w.U64(l.OpenedHeight)
	w.U64(l.CommittedHeight)
	w.Str(l.Aggregator)
	w.Uvarint(uint64(len(l.Contributors)))
	for _, c := range l.Contributors {
		w.Str(c.Trainer)
		w.Str(c.UpdateDigest)
		w.Str(c.DatasetDigest)
		w.U64(c.Samples)
		w.F64(c.Weight)
	}
	w.Uvarint(uint64(len(l.Rejected)))
	for _, r := range l.Rejected {
		w.Str(r.Trainer)
		w.Str(r.UpdateDigest)
		w.Str(r.Reason)
	}
	// Optional trailing section (absent in records written before it, and
	// whenever no contributor trained on published ranges beside its own
	// dataset, so those records keep their bytes): tag 1, then each
	// contributor's published datasets.
	if slices.ContainsFunc(l.Contributors, func(c ledger.LineageContribution) bool { return len(c.Published) > 0 }) {
		w.U8(lineageTagPublished)
		for _, c := range l.Contributors {
			w.Uvarint(uint64(len(c.Published)))
			for _, d := range c.Published {
				w.Str(d)
			}
		}
	}
	return w.B
}

// lineageTagPublished starts a lineage record's section of the
// contributors' published datasets.
const lineageTagPublished byte = 1

func decodeLineageLink(b []byte) (*lineageLink, error) {
	r := codec.NewReader(b)
	if v := r.U8(); r.Err() == nil && v != lineageVersion {
		return nil, fmt.Errorf("lineage record version %d, want %d", v, lineageVersion)
	}
	const maxStr = ledger.MaxReasonLen
	l := &lineageLink{}
	l.JobID = r.Str(maxStr)
	l.Round = r.U64()
	l.ConfigDigest = r.Str(maxStr)
	l.BaseModel = r.Str(maxStr)
	l.ModelDigest = r.Str(maxStr)
	l.Strategy = r.Str(maxStr)
	if n := r.Length(ledger.MaxMapEntries); n > 0 {
		l.Params = make(map[string]string, n)
		for i := 0; i < n && r.Err() == nil; i++ {
			k := r.Str(maxStr)
			l.Params[k] = r.Str(maxStr)
		}
	}
	l.OpenedHeight = r.U64()
	l.CommittedHeight = r.U64()
	l.Aggregator = r.Str(maxStr)
	n := r.Length(ledger.MaxTrainers)
	if n > 0 {
		l.Contributors = make([]ledger.LineageContribution, n)
	}
	for i := 0; i < n && r.Err() == nil; i++ {
		c := &l.Contributors[i]
		c.Trainer = r.Str(maxStr)
		c.UpdateDigest = r.Str(maxStr)
		c.DatasetDigest = r.Str(maxStr)
		c.Samples = r.U64()
		c.Weight = r.F64()
	}
	n = r.Length(ledger.MaxTrainers)
	if n > 0 {
		l.Rejected = make([]ledger.RejectedUpdate, n)
	}
	for i := 0; i < n && r.Err() == nil; i++ {
		x := &l.Rejected[i]
		x.Trainer = r.Str(maxStr)
		x.UpdateDigest = r.Str(maxStr)
		x.Reason = r.Str(maxStr)
	}
	if r.More() {
		if tag := r.U8(); tag != lineageTagPublished {
			return nil, fmt.Errorf("lineage record: unknown trailing section %d", tag)
		}
		for i := range l.Contributors {
			n := r.Length(ledger.MaxPublished)
			for j := 0; j < n && r.Err() == nil; j++ {
				l.Contributors[i].Published = append(l.Contributors[i].Published, r.Str(maxStr))
			}
		}
	}
	if err := r.Done(); err != nil {
		return nil, err
	}
	return l, nil
}

// errStop ends an iteration early.
var errStop = errors.New("stop")

func encodeSegmentPtr(seg string, depth uint64) []byte {
	var w codec.Writer
	w.Str(seg)
	w.U64(depth)
	return w.B
}

func decodeSegmentPtr(b []byte) (string, uint64, error) {
	r := codec.NewReader(b)
	seg := r.Str(64)
	depth := r.U64()
	return seg, depth, r.Done()
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
func lineage(st segmentReader, digest string) (*ledger.Lineage, error) {
	var m ledger.Model
	if ok, err := getJSON(st, modelKey(digest), &m); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("model %s: %w", digest, ledger.ErrRecordNotFound)
	}
	out := &ledger.Lineage{Model: m}
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
				for _, d := range c.Datasets() {
					datasets[d] = true
				}
			}
			lr := ledger.LineageRound(*l)
			var rec ledger.Round
			if ok, err := getJSON(st, roundKey(l.JobID, l.Round), &rec); err != nil {
				return nil, err
			} else if ok {
				lr.Eval = rec.Evaluation
			}
			out.Rounds = append(out.Rounds, lr)
		}
		d = links[0].BaseModel
	}
	cur := m
	if d != digest {
		cur = ledger.Model{} // decode afresh: JSON leaves absent fields as they were
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
		var d ledger.Dataset
		if ok, err := getJSON(st, datasetKey(k), &d); err != nil {
			return nil, err
		} else if ok {
			if d.Attestations, err = attestationsOf(st, k); err != nil {
				return nil, err
			}
			out.Datasets = append(out.Datasets, d)
		}
	}
	if err := missingInLineage(st, out); err != nil {
		return nil, err
	}
	return out, nil
}

// missingInLineage fills l.Missing: for every round, each attestation its
// job requires that a contributor's dataset lacks now.
func missingInLineage(st segmentReader, l *ledger.Lineage) error {
	atts := map[string][]ledger.DatasetAttestation{}
	for _, d := range l.Datasets {
		atts[d.Digest] = d.Attestations
	}
	jobs := map[string]*ledger.JobRecord{}
	for _, r := range l.Rounds {
		j, seen := jobs[r.JobID]
		if !seen {
			var rec ledger.JobRecord
			ok, err := getJSON(st, jobRecordKey(r.JobID), &rec)
			if err != nil {
				return err
			}
			if ok {
				j = &rec
			}
			jobs[r.JobID] = j
		}
		if j == nil || len(j.Recipe.RequireAttestations) == 0 {
			continue
		}
		done := map[string]bool{}
		for _, c := range r.Contributors {
			for _, d := range c.Datasets() {
				if done[d] {
					continue
				}
				done[d] = true
				for _, req := range ledger.MissingAttestations(j.Recipe.RequireAttestations, atts[d]) {
					l.Missing = append(l.Missing, ledger.MissingAttestation{JobID: r.JobID, Round: r.Round, Dataset: d, Requirement: req})
				}
			}
		}
	}
	return nil
}
