package ledger

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
)

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

// Block returns the block at height h (0 = genesis). It wraps
// ErrRecordNotFound above the head.
func (f *FSM) Block(h uint64) (*Block, error) {
	return readBlock(f.st, h)
}

func readBlock(st getter, h uint64) (*Block, error) {
	raw, ok, err := st.Get(blockKey(h))
	if err != nil {
		return nil, fmt.Errorf("ledger: read block %d: %w", h, err)
	}
	if !ok {
		return nil, fmt.Errorf("block %d: %w", h, ErrRecordNotFound)
	}
	b, err := DecodeBlock(raw)
	if err != nil {
		return nil, fmt.Errorf("ledger: stored block %d: %w", h, err)
	}
	return b, nil
}

// Tx returns the transaction with the given hash, where it is and its
// Merkle inclusion proof. It wraps ErrRecordNotFound for a tx not on the
// chain (rejected or never seen).
func (f *FSM) Tx(hash [32]byte) (*TxRecord, error) {
	raw, ok, err := f.st.Get(txIndexKey(hash))
	if err != nil {
		return nil, fmt.Errorf("ledger: read tx index: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("tx %x: %w", hash, ErrRecordNotFound)
	}
	r := reader{b: raw}
	h, idx := r.u64(), uint64(r.u32())
	if err := r.done(); err != nil {
		return nil, fmt.Errorf("ledger: tx index of %x: %w", hash, err)
	}
	b, err := f.Block(h)
	if err != nil {
		return nil, err
	}
	if idx >= uint64(len(b.Txs)) || TxHash(b.Txs[idx]) != hash {
		return nil, fmt.Errorf("ledger: tx index of %x points at height %d index %d, which holds another tx", hash, h, idx)
	}
	proof, err := InclusionProof(b.Txs, idx)
	if err != nil {
		return nil, err
	}
	return &TxRecord{Hash: hash, Height: h, Index: idx, Envelope: b.Txs[idx], Proof: proof,
		TreeSize: uint64(len(b.Txs)), TxRoot: b.Header.TxRoot, BlockHash: b.Hash()}, nil
}

// Member returns a member (current or removed) by ID.
func (f *FSM) Member(id string) (*Member, error) {
	var m Member
	if err := f.getRecord(memberKey(id), &m, "member "+id); err != nil {
		return nil, err
	}
	return &m, nil
}

// Members returns every member ever added, current and removed, by ID.
func (f *FSM) Members() ([]Member, error) {
	var out []Member
	err := f.st.Iter([]byte(prefixMember), func(_, v []byte) error {
		var m Member
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: list members: %w", err)
	}
	return out, nil
}

// Model returns a model (registered or committed) by digest.
func (f *FSM) Model(digest string) (*Model, error) {
	var m Model
	if err := f.getRecord(modelKey(digest), &m, "model "+digest); err != nil {
		return nil, err
	}
	return &m, nil
}

// Dataset returns a registered dataset by manifest digest.
func (f *FSM) Dataset(digest string) (*Dataset, error) {
	var d Dataset
	if err := f.getRecord(datasetKey(digest), &d, "dataset "+digest); err != nil {
		return nil, err
	}
	return &d, nil
}

// Round returns round n of a job with its submitted updates.
func (f *FSM) Round(jobID string, n uint64) (*Round, error) {
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: round: state closed")
	}
	defer sn.Close()
	var r Round
	ok, err := getJSON(sn, roundKey(jobID, n), &r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("round %d of job %q: %w", n, jobID, ErrRecordNotFound)
	}
	err = sn.Iter(updatePrefix(jobID, n), func(_, v []byte) error {
		var u Update
		if err := json.Unmarshal(v, &u); err != nil {
			return err
		}
		r.Updates = append(r.Updates, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: round updates: %w", err)
	}
	sort.Slice(r.Updates, func(i, j int) bool { return r.Updates[i].Trainer < r.Updates[j].Trainer })
	return &r, nil
}

// Lineage returns the history of a model back to its registered base model.
// It wraps ErrRecordNotFound for an unknown digest.
func (f *FSM) Lineage(modelDigest string) (*Lineage, error) {
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: lineage: state closed")
	}
	defer sn.Close()
	return lineage(sn, modelDigest)
}

// Nonce returns the last nonce applied for signer (0 if none), so the
// signer's next transaction uses Nonce+1.
func (f *FSM) Nonce(signer string) (uint64, error) {
	v, ok, err := f.st.Get(nonceKey(signer))
	if err != nil {
		return 0, fmt.Errorf("ledger: read nonce: %w", err)
	}
	if !ok {
		return 0, nil
	}
	return parseU64(v)
}

func (f *FSM) getRecord(key []byte, v any, what string) error {
	ok, err := getJSON(f.st, key, v)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: %w", what, ErrRecordNotFound)
	}
	return nil
}

// # Updates by digest

// UpdateSubmission is one UpdateSubmitted of an update digest: which
// trainer submitted it for which job and round, and at what height.
type UpdateSubmission struct {
	JobID   string `json:"job_id"`
	Round   uint64 `json:"round"`
	Trainer string `json:"trainer"`
	Height  uint64 `json:"height"`
}

// UpdatesByDigest returns every UpdateSubmitted of update digest, earliest
// (lowest height) first, so that the first is its author: a later
// submission of the same digest can only be a copy of bytes already named
// on the chain. It wraps ErrRecordNotFound when no update has that digest
// (or digest is not one). It reads the digest-first index (c/ux/, see
// state.go): a prefix scan over the digest's own submissions, whatever the
// number of updates on the chain.
func (f *FSM) UpdatesByDigest(digest string) ([]UpdateSubmission, error) {
	if !isHexDigest(digest) {
		return nil, fmt.Errorf("update %q is not a SHA-256 digest: %w", abbrev(digest), ErrRecordNotFound)
	}
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: updates by digest: state closed")
	}
	defer sn.Close()
	var out []UpdateSubmission
	prefix := []byte(prefixUpdateIdx + digest)
	err := sn.Iter(prefix, func(k, v []byte) error {
		suffix := k[len(prefix):] // job ‖ 0 ‖ round (8 bytes)
		if len(suffix) < 9 || suffix[len(suffix)-9] != 0 {
			return fmt.Errorf("malformed index key %q", k)
		}
		job, round := string(suffix[:len(suffix)-9]), binary.BigEndian.Uint64(suffix[len(suffix)-8:])
		s := UpdateSubmission{JobID: job, Round: round, Trainer: string(v)}
		var u Update
		if ok, err := getJSON(sn, updateKey(job, round, s.Trainer), &u); err != nil {
			return err
		} else if ok {
			s.Height = u.Height
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: updates by digest: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("update %s: %w", digest, ErrRecordNotFound)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Height < out[j].Height })
	return out, nil
}
